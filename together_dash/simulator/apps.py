from __future__ import annotations

from django.apps import AppConfig


class SimulatorConfig(AppConfig):
    name = "together_dash.simulator"
    label = "simulator"
    verbose_name = "Together API simulator"
