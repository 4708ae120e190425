from __future__ import annotations

from django.apps import AppConfig


class ToolsConfig(AppConfig):
    name = "together_dash.tools"
    label = "tools"
    verbose_name = "Together tools"
