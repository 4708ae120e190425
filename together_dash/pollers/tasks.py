"""Celery tasks: thin shells over the poller services; each has a management command twin.

acks_late (settings) means a task whose worker dies is delivered again; the redelivered task keeps its
id, which is also the poller's lease token, so it takes the lease back at once (pollers/runs.py).
"""
from __future__ import annotations

from celery import Task, shared_task

from together_dash.catalog.polling import poll_models as poll_models_service
from together_dash.jobs.batches import poll_batches as poll_batches_service
from together_dash.jobs.batches import process_batch_files as process_batch_files_service
from together_dash.jobs.fine_tunes import poll_fine_tunes as poll_fine_tunes_service
from together_dash.pollers.key_health import check_keys as check_keys_service
from together_dash.pollers.rate_limits import poll_rate_limits as poll_rate_limits_service

# Each poll bounds its HTTP calls (POLLER_TIMEOUT, POLLER_KEY_DEADLINE); these limits are the backstop.
POLL_LIMITS = {"soft_time_limit": 240, "time_limit": 300}


@shared_task(bind=True, **POLL_LIMITS)
def poll_models(self: Task) -> None:
    poll_models_service(token=self.request.id)


@shared_task(bind=True, **POLL_LIMITS)
def poll_rate_limits(self: Task) -> None:
    poll_rate_limits_service(token=self.request.id)


@shared_task(bind=True, **POLL_LIMITS)
def poll_fine_tunes(self: Task) -> None:
    poll_fine_tunes_service(token=self.request.id)


@shared_task(bind=True, **POLL_LIMITS)
def poll_batches(self: Task) -> None:
    poll_batches_service(token=self.request.id, dispatch=process_batch_files.delay_on_commit)


@shared_task(bind=True, **POLL_LIMITS)
def check_keys(self: Task) -> None:
    check_keys_service(token=self.request.id)


@shared_task(soft_time_limit=540, time_limit=600)
def process_batch_files(batch_pk: int) -> None:
    process_batch_files_service(batch_pk)
