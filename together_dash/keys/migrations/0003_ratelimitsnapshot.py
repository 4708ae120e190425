"""RateLimitSnapshot moves from the pollers app to the keys app, where its poller now lives.

The rows stay: the model is taken over in the migration state only, then its table is renamed.
"""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("keys", "0002_audit_log_and_upstream_grace"),
        ("pollers", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="RateLimitSnapshot",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                            ),
                        ),
                        ("model", models.CharField(blank=True, max_length=255)),
                        ("taken_at", models.DateTimeField()),
                        ("source", models.CharField(choices=[("probe", "Probe"), ("proxy", "Proxy")], max_length=8)),
                        ("request_limit", models.FloatField(blank=True, null=True)),
                        ("request_remaining", models.FloatField(blank=True, null=True)),
                        ("reset_seconds", models.FloatField(blank=True, null=True)),
                        ("token_limit", models.FloatField(blank=True, null=True)),
                        ("token_remaining", models.FloatField(blank=True, null=True)),
                        ("request_limit_dynamic", models.FloatField(blank=True, null=True)),
                        ("request_remaining_dynamic", models.FloatField(blank=True, null=True)),
                        ("token_limit_dynamic", models.FloatField(blank=True, null=True)),
                        ("token_remaining_dynamic", models.FloatField(blank=True, null=True)),
                        ("headroom_pct", models.FloatField(blank=True, null=True)),
                        (
                            "key",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE, related_name="+", to="keys.togetherkey"
                            ),
                        ),
                    ],
                    options={
                        "ordering": ["-taken_at"],
                        "db_table": "pollers_ratelimitsnapshot",
                        "indexes": [
                            models.Index(fields=["key", "model", "-taken_at"], name="ratelimitsnap_series_idx"),
                            models.Index(fields=["-taken_at"], name="ratelimitsnap_time_idx"),
                        ],
                        "constraints": [
                            models.UniqueConstraint(
                                fields=("key", "model", "source", "taken_at"), name="ratelimitsnap_unique"
                            )
                        ],
                    },
                ),
            ],
        ),
        migrations.AlterModelTable(name="RateLimitSnapshot", table=None),
    ]
