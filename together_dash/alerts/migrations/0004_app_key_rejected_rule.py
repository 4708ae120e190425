"""The rule of the new app_key_rejected kind, with its defaults (copied here: migrations must not change)."""

from __future__ import annotations

from django.db import migrations


def create_rule(apps, schema_editor):  # noqa: ANN001, ANN201
    AlertRule = apps.get_model("alerts", "AlertRule")
    AlertRule.objects.get_or_create(
        kind="app_key_rejected", defaults={"threshold": 20, "window_minutes": 15, "renotify_minutes": 0}
    )


class Migration(migrations.Migration):
    dependencies = [("alerts", "0003_channels")]
    operations = [migrations.RunPython(create_rule, migrations.RunPython.noop)]
