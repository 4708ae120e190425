"""poll_fine_tunes against the simulator: jobs that complete, fail, wait too long, and their events."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from together_dash.demo.jobs import FINETUNE_MODEL, start_fine_tune
from together_dash.jobs.fine_tunes import poll_fine_tunes, save_events
from together_dash.jobs.models import FineTuneEvent, FineTuneJob
from together_dash.pollers.testing import add_key
from together_dash.simulator.finetunes import FAILURE_MESSAGES
from together_dash.simulator.testing import RunningSimulator
from together_dash.together.client import TogetherClient
from together_dash.together.types import FineTuneEvent as ApiEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def client(together: RunningSimulator) -> Iterator[TogetherClient]:
    """A client on the simulator for the test's own set-up calls, with the first upstream key."""
    _, secret = add_key("main")
    with TogetherClient(secret, base_url=together.base_url) as api:
        yield api


def _job_values() -> list[tuple[object, ...]]:
    fields = ("job_id", "status", "steps_completed", "progress_pct", "finished_at", "events_synced_status")
    return list(FineTuneJob.objects.values_list(*fields))


def test_a_job_is_followed_from_pending_to_completed(
    together: RunningSimulator, client: TogetherClient
) -> None:
    together.freeze_clock()
    started = start_fine_tune(client)
    poll_fine_tunes()
    job = FineTuneJob.objects.get(job_id=started.id)
    assert (job.status, job.base_model, job.upstream_key.name) == ("pending", FINETUNE_MODEL, "main")
    assert list(job.events.values_list("type_normalized", flat=True)) == ["job_pending"]

    together.advance(8)  # 2 s pending + 3 s queued, then 2 s per step: 1 step of 2 done
    poll_fine_tunes()
    job.refresh_from_db()
    assert (job.status, job.steps_completed, job.total_steps, job.progress_pct) == ("running", 1, 2, 50.0)

    together.advance(60)
    report = poll_fine_tunes()
    job.refresh_from_db()
    assert (job.status, job.progress_pct, job.epochs_completed, job.n_epochs) == ("completed", 100.0, 2, 2)
    assert job.finished_at is not None and job.output_model
    assert job.total_price is not None and job.token_count
    assert "job_complete" in set(job.events.values_list("type_normalized", flat=True))
    assert report.counts["events_added"] > 0


def test_an_event_about_no_step_shows_no_step(together: RunningSimulator, client: TogetherClient) -> None:
    together.freeze_clock()
    start_fine_tune(client)
    poll_fine_tunes()
    event = FineTuneEvent.objects.get(type_normalized="job_pending")
    assert event.step is None  # Together sends step 0 on it (the schema makes step an integer)


def test_a_rerun_changes_nothing(together: RunningSimulator, client: TogetherClient) -> None:
    together.freeze_clock()
    start_fine_tune(client)
    together.advance(60)
    poll_fine_tunes()
    values, events = _job_values(), FineTuneEvent.objects.count()
    report = poll_fine_tunes()
    assert _job_values() == values
    assert FineTuneEvent.objects.count() == events
    assert "events_added" not in report.counts  # a finished, synced job is not fetched again


def test_a_job_that_fails_keeps_its_status_and_message(
    together: RunningSimulator, client: TogetherClient
) -> None:
    together.freeze_clock()
    started = start_fine_tune(client, suffix="sim-user-error")
    together.advance(120)
    poll_fine_tunes()
    job = FineTuneJob.objects.get(job_id=started.id)
    assert job.status == "user_error"
    assert job.failed and job.is_finished
    assert job.error_message == FAILURE_MESSAGES["user_error"]
    assert job.events.filter(type_normalized="job_error", level="error").exists()


def test_a_job_failing_with_an_internal_error(together: RunningSimulator, client: TogetherClient) -> None:
    together.freeze_clock()
    start_fine_tune(client, suffix="sim-error")
    together.advance(120)
    poll_fine_tunes()
    assert FineTuneJob.objects.get().status == "error"


def test_event_types_are_the_same_event_in_either_case(
    together: RunningSimulator, client: TogetherClient
) -> None:
    started = start_fine_tune(client)
    poll_fine_tunes()
    job = FineTuneJob.objects.get(job_id=started.id)
    event = job.events.get()
    upper = ApiEvent.from_json(
        {
            "created_at": event.created_at.isoformat(),
            "type": "JOB_PENDING",
            "message": event.message,
            "level": "Info",
        }
    )
    assert save_events(job, [upper], job.status) == 0
    other = ApiEvent.from_json(
        {
            "created_at": event.created_at.isoformat(),
            "type": "JOB_USER_ERROR",
            "message": "Bad sample on line 3",
            "level": "Error",
        }
    )
    assert save_events(job, [other], job.status) == 1
    job.refresh_from_db()
    assert job.error_message == "Bad sample on line 3"


def test_a_job_seen_by_two_keys_is_stored_once_for_the_first_key(
    together: RunningSimulator, client: TogetherClient
) -> None:
    add_key("second")
    together.freeze_clock()
    start_fine_tune(client)
    together.advance(60)
    poll_fine_tunes()
    job = FineTuneJob.objects.get()
    assert job.upstream_key.name == "main"
    assert job.events.count() == len(set(job.events.values_list("digest", flat=True)))


def test_a_job_pending_beyond_the_threshold_is_flagged_stuck(
    together: RunningSimulator, client: TogetherClient, settings: object
) -> None:
    settings.FINETUNE_STUCK_AFTER = 3600
    together.set_scenario(job_speed=0.0001)  # pending for 20,000 s
    started = start_fine_tune(client)
    poll_fine_tunes()
    assert FineTuneJob.objects.get(job_id=started.id).stuck_since is None
    # tick=True: the pollers' event loop needs a clock that moves.
    with time_machine.travel(timezone.now() + timedelta(hours=2), tick=True):
        report = poll_fine_tunes()
    job = FineTuneJob.objects.get(job_id=started.id)
    assert job.status == "pending"
    assert job.stuck_since is not None
    assert (report.counts["stuck"], report.counts["stuck_new"]) == (1, 1)
