from __future__ import annotations

from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "together_dash.core"
    label = "core"
    verbose_name = "Core"

    def ready(self) -> None:
        from together_dash.core import checks  # noqa: F401  (registers the system checks)
