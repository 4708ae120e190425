"""The unpriced_model alert kind and its default rule (values copied here: migrations must not change)."""

from __future__ import annotations

from django.db import migrations, models


def create_rule(apps, schema_editor):  # noqa: ANN001, ANN201
    AlertRule = apps.get_model("alerts", "AlertRule")
    AlertRule.objects.get_or_create(
        kind="unpriced_model", defaults={"threshold": 1, "window_minutes": 60, "renotify_minutes": 1440}
    )


class Migration(migrations.Migration):
    dependencies = [("alerts", "0004_app_key_rejected_rule")]
    operations = [
        migrations.AlterField(
            model_name="alertrule",
            name="kind",
            field=models.CharField(
                choices=[
                    ("billing", "Credits exhausted (HTTP 402)"),
                    ("key_invalid", "Key invalid (HTTP 401)"),
                    ("headroom", "Rate-limit headroom low"),
                    ("error_rate", "Error rate per category"),
                    ("finetune_failed", "Fine-tune job failed"),
                    ("finetune_stuck", "Fine-tune job stuck"),
                    ("batch_failed", "Batch failed or expired"),
                    ("model_removed", "Model in use removed from the catalog"),
                    ("poller_stale", "Poller stale"),
                    ("logs_dropped", "Proxy dropped request logs"),
                    ("app_key_rejected", "App key rejected by the proxy"),
                    ("unpriced_model", "Unpriced model in use"),
                ],
                max_length=20,
                unique=True,
            ),
        ),
        migrations.RunPython(create_rule, migrations.RunPython.noop),
    ]
