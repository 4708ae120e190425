from __future__ import annotations

from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "together_dash.jobs"
    label = "jobs"
    verbose_name = "Fine-tunes and batches"
