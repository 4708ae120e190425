from __future__ import annotations

from django.apps import AppConfig


class PollersConfig(AppConfig):
    name = "together_dash.pollers"
    label = "pollers"
    verbose_name = "Pollers"
