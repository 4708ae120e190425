"""One rule per alert kind, with the defaults from kinds.py (copied here: migrations must not change)."""

from __future__ import annotations

from django.db import migrations

DEFAULT_RULES = {
    # kind: (threshold, window_minutes, renotify_minutes)
    "billing": (1, 0, 240),
    "key_invalid": (1, 15, 240),
    "headroom": (10, 5, 120),
    "error_rate": (20, 10, 120),
    "finetune_failed": (1, 1440, 0),
    "finetune_stuck": (60, 0, 0),
    "batch_failed": (1, 1440, 0),
    "model_removed": (1, 10080, 1440),
    "poller_stale": (1, 0, 240),
    "logs_dropped": (1, 10, 120),
}


def create_rules(apps, schema_editor):  # noqa: ANN001, ANN201
    AlertRule = apps.get_model("alerts", "AlertRule")
    for kind, (threshold, window, renotify) in DEFAULT_RULES.items():
        AlertRule.objects.get_or_create(
            kind=kind,
            defaults={"threshold": threshold, "window_minutes": window, "renotify_minutes": renotify},
        )


class Migration(migrations.Migration):
    dependencies = [("alerts", "0001_initial")]
    operations = [migrations.RunPython(create_rules, migrations.RunPython.noop)]
