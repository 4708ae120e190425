from __future__ import annotations

from django.apps import AppConfig


class AlertsConfig(AppConfig):
    name = "together_dash.alerts"
    verbose_name = "Alerts"

    def ready(self) -> None:
        from together_dash.alerts import checks  # noqa: F401 - registers the system checks
