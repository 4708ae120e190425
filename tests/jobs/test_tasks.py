"""The Celery tasks are thin shells: they run the pollers, and finished batches go to a task after commit."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from together_dash.demo.jobs import batch_lines, start_batch, start_fine_tune
from together_dash.jobs import tasks
from together_dash.jobs.models import BatchJob, FineTuneJob
from together_dash.pollers.models import PollerHeartbeat
from together_dash.pollers.testing import add_key
from together_dash.simulator.testing import RunningSimulator
from together_dash.together.client import TogetherClient

pytestmark = pytest.mark.django_db


def test_a_poll_task_runs_the_poller_under_its_task_id(together: RunningSimulator) -> None:
    _, secret = add_key("main")
    with TogetherClient(secret, base_url=together.base_url) as client:
        start_fine_tune(client)
    result = tasks.poll_fine_tunes.apply()
    assert result.successful()
    assert FineTuneJob.objects.count() == 1
    assert PollerHeartbeat.objects.get(name="poll_fine_tunes").last_success is not None


def test_finished_batches_are_read_by_a_task_enqueued_after_commit(
    together: RunningSimulator, django_capture_on_commit_callbacks: Callable[..., object]
) -> None:
    _, secret = add_key("main")
    together.freeze_clock()
    with TogetherClient(secret, base_url=together.base_url) as client:
        start_batch(client, batch_lines(3, invalid=(0,)))
    together.advance(30)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        tasks.poll_batches.apply()
    assert len(callbacks) == 1  # process_batch_files.delay, sent only once the poll's writes commit
    assert BatchJob.objects.get().files_state == BatchJob.FilesState.PENDING

    tasks.process_batch_files.apply(args=[BatchJob.objects.get().pk])
    batch = BatchJob.objects.get()
    assert (batch.files_state, batch.succeeded_count, batch.failed_count) == ("done", 2, 1)
