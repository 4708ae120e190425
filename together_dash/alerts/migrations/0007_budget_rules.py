"""The budget and spend_anomaly alert kinds and their default rules (values copied: migrations must not change)."""

from __future__ import annotations

from django.db import migrations, models


def create_rules(apps, schema_editor):  # noqa: ANN001, ANN201
    AlertRule = apps.get_model("alerts", "AlertRule")
    AlertRule.objects.get_or_create(
        kind="budget", defaults={"threshold": 1, "window_minutes": 0, "renotify_minutes": 0}
    )
    AlertRule.objects.get_or_create(
        kind="spend_anomaly", defaults={"threshold": 2, "window_minutes": 60, "renotify_minutes": 0}
    )


class Migration(migrations.Migration):
    dependencies = [("alerts", "0006_endpoint_rules")]
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
                    ("endpoint_idle", "Dedicated endpoint billing with no traffic"),
                    ("endpoint_no_timeout", "Dedicated endpoint with no inactive timeout"),
                    ("endpoint_error", "Dedicated endpoint in ERROR"),
                    ("endpoint_slow_start", "Dedicated endpoint slow to start"),
                    ("budget", "Spend budget threshold reached"),
                    ("spend_anomaly", "Spend anomaly"),
                ],
                max_length=20,
                unique=True,
            ),
        ),
        migrations.RunPython(create_rules, migrations.RunPython.noop),
    ]
