"""Celery tasks of the datasets app: thin shells over datasets.services."""
from __future__ import annotations

from celery import shared_task

from together_dash.datasets import services


@shared_task(name="datasets.validate_dataset_upload", ignore_result=True)
def validate_dataset_upload(validation_id: int) -> None:
    """Validate one uploaded dataset, writing its progress as the file is read."""
    services.run_validation(validation_id)
