from __future__ import annotations

from django.apps import AppConfig


class AlertsConfig(AppConfig):
    name = "together_dash.alerts"
    verbose_name = "Alerts"

    def ready(self) -> None:
        from together_dash.alerts import checks  # noqa: F401 - registers the system checks
        from together_dash.alerts.models import AlertChannel
        from together_dash.alerts.tasks import on_batch_recorded
        from together_dash.keys.lifecycle import register_encrypted_fields
        from together_dash.traffic.signals import batch_recorded

        # rotate_encryption_key moves the channels' targets and secrets to the newest key too.
        register_encrypted_fields(AlertChannel, "target_encrypted", "secret_encrypted")

        # The billing alert hears of every committed batch; traffic never imports alerts.
        batch_recorded.connect(on_batch_recorded, dispatch_uid="alerts.billing")
