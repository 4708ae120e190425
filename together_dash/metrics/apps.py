from __future__ import annotations

from django.apps import AppConfig


class MetricsConfig(AppConfig):
    name = "together_dash.metrics"
    label = "metrics"
    verbose_name = "Metrics"
