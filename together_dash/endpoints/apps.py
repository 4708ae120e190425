from __future__ import annotations

from django.apps import AppConfig


class EndpointsConfig(AppConfig):
    name = "together_dash.endpoints"
    label = "endpoints"
    verbose_name = "Dedicated endpoints"
