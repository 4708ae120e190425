from __future__ import annotations

from django.apps import AppConfig


class DiagnosticsConfig(AppConfig):
    name = "together_dash.diagnostics"
    label = "diagnostics"
    verbose_name = "Diagnostics"
