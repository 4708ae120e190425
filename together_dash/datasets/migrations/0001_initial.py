"""DatasetValidation, taken over from the `tools` app it was first created in.

An install that ran the tools app keeps its rows: the state starts on the old table, which is created
only when it is not there, then renamed to this app's own table.
"""

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


def create_unless_taken_over(apps, schema_editor):
    model = apps.get_model("datasets", "DatasetValidation")
    if model._meta.db_table not in schema_editor.connection.introspection.table_names():
        schema_editor.create_model(model)


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(state_operations=[migrations.CreateModel(
            name="DatasetValidation",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("filename", models.CharField(max_length=255)),
                ("file_path", models.CharField(blank=True, max_length=500)),
                ("size", models.BigIntegerField()),
                ("purpose", models.CharField(default="fine-tune", max_length=20)),
                ("model_id", models.CharField(blank=True, max_length=255)),
                ("context_length", models.PositiveIntegerField(blank=True, null=True)),
                (
                    "status",
                    models.CharField(
                        choices=[
                            ("queued", "Queued"),
                            ("running", "Running"),
                            ("done", "Done"),
                            ("failed", "Failed"),
                        ],
                        default="queued",
                        max_length=10,
                    ),
                ),
                ("progress", models.PositiveSmallIntegerField(default=0)),
                ("result", models.JSONField(blank=True, null=True)),
                ("error_count", models.PositiveIntegerField(blank=True, null=True)),
                ("warning_count", models.PositiveIntegerField(blank=True, null=True)),
                ("failure", models.TextField(blank=True)),
                ("created_at", models.DateTimeField(db_index=True, default=django.utils.timezone.now)),
                ("finished_at", models.DateTimeField(blank=True, null=True)),
                (
                    "created_by",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "ordering": ["-created_at", "-id"],
                "db_table": "tools_datasetvalidation",
            },
        )]),
        migrations.RunPython(create_unless_taken_over, migrations.RunPython.noop),
        migrations.AlterModelTable(name="DatasetValidation", table=None),
    ]
