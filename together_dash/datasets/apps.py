from __future__ import annotations

from django.apps import AppConfig


class DatasetsConfig(AppConfig):
    name = "together_dash.datasets"
    label = "datasets"
    verbose_name = "Fine-tune datasets"
