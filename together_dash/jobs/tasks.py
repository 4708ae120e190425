"""Celery tasks of fine-tunes and batches: thin shells over fine_tunes.py and batches.py.

Each poll has a management command twin (poll_fine_tunes, poll_batches) that runs the same code.
"""
from __future__ import annotations

from celery import Task, shared_task

from together_dash.jobs.batches import poll_batches as poll_batches_service
from together_dash.jobs.batches import process_batch_files as process_batch_files_service
from together_dash.jobs.fine_tunes import poll_fine_tunes as poll_fine_tunes_service
from together_dash.pollers.runs import POLL_LIMITS


@shared_task(bind=True, **POLL_LIMITS)
def poll_fine_tunes(self: Task) -> None:
    poll_fine_tunes_service(token=self.request.id)


@shared_task(bind=True, **POLL_LIMITS)
def poll_batches(self: Task) -> None:
    poll_batches_service(token=self.request.id, dispatch=process_batch_files.delay_on_commit)


@shared_task(soft_time_limit=540, time_limit=600)
def process_batch_files(batch_pk: int) -> None:
    process_batch_files_service(batch_pk)
