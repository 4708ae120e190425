from __future__ import annotations

from django.apps import AppConfig


class CatalogConfig(AppConfig):
    name = "together_dash.catalog"
    label = "catalog"
    verbose_name = "Model catalog"
