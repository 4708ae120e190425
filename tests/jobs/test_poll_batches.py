"""poll_batches against the simulator: progress, failures from the error file, the remainder after a 402."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from together_dash.demo.jobs import batch_lines, start_batch
from together_dash.jobs.batches import (
    batch_remainder,
    files_to_read,
    poll_batches,
    process_batch_files,
    remainder_name,
)
from together_dash.jobs.models import BatchJob
from together_dash.pollers.testing import add_key
from together_dash.simulator.testing import RunningSimulator
from together_dash.together.client import TogetherClient

pytestmark = pytest.mark.django_db


@pytest.fixture
def client(together: RunningSimulator) -> Iterator[TogetherClient]:
    _, secret = add_key("main")
    with TogetherClient(secret, base_url=together.base_url) as api:
        yield api


def _ids(lines: list[str]) -> list[str]:
    return [json.loads(line)["custom_id"] for line in lines]


def test_progress_is_followed_while_the_batch_runs(
    together: RunningSimulator, client: TogetherClient
) -> None:
    together.freeze_clock()
    started = start_batch(client, batch_lines(10))
    poll_batches()
    batch = BatchJob.objects.get(batch_id=started.id)
    assert (batch.status, batch.progress_pct, batch.files_state) == ("VALIDATING", 0.0, "waiting")
    together.advance(2.25)  # 2 s validating, then 20 lines a second
    poll_batches()
    batch.refresh_from_db()
    assert (batch.status, batch.progress_pct) == ("IN_PROGRESS", 50.0)
    assert batch.failed_count is None


def test_a_batch_with_partial_failures_counts_them_from_the_error_file(
    together: RunningSimulator, client: TogetherClient
) -> None:
    together.freeze_clock()
    lines = batch_lines(10, invalid=(2, 5))
    started = start_batch(client, lines)
    together.advance(30)
    report = poll_batches()
    batch = BatchJob.objects.get(batch_id=started.id)
    assert (batch.status, batch.progress_pct, batch.files_state) == ("COMPLETED", 100.0, "done")
    assert (batch.request_count, batch.succeeded_count, batch.failed_count) == (10, 8, 2)
    assert [failure["custom_id"] for failure in batch.failed_sample] == ["r2", "r5"]
    assert all(failure["message"] for failure in batch.failed_sample)
    assert not batch.stopped_for_credits
    # The failed requests have no output: they are what to fix and resubmit.
    assert batch.remainder_count == 2
    assert _ids(batch.remainder_path.read_text().splitlines()) == ["r2", "r5"]
    assert report.counts["files_dispatched"] == 1


def test_a_batch_stopped_by_402_leaves_the_remainder_ready_to_resubmit(
    together: RunningSimulator, client: TogetherClient, tmp_path: Path
) -> None:
    together.freeze_clock()
    lines = batch_lines(10)
    started = start_batch(client, lines)
    together.set_credits(4)  # four lines are answered, then the account is out of credits
    together.advance(30)
    poll_batches()
    batch = BatchJob.objects.get(batch_id=started.id)
    assert batch.status == "FAILED"
    assert batch.stopped_for_credits
    assert (batch.request_count, batch.succeeded_count, batch.failed_count) == (10, 4, 0)
    assert batch.remainder_count == 6
    stored = batch.remainder_path.read_text().splitlines()
    assert stored == [json.dumps(line) for line in lines[4:]]  # exactly as uploaded

    out = tmp_path / "remainder.jsonl"
    call_command("batch_remainder", started.id, "-o", str(out), stderr=StringIO())
    assert out.read_text().splitlines() == stored
    assert list(batch_remainder(started.id)) == stored


def test_a_rerun_changes_nothing(together: RunningSimulator, client: TogetherClient) -> None:
    together.freeze_clock()
    start_batch(client, batch_lines(4, invalid=(1,)))
    together.advance(30)
    poll_batches()
    fields = (
        "batch_id",
        "status",
        "progress",
        "failed_count",
        "remainder_count",
        "files_state",
        "files_attempts",
    )
    before = list(BatchJob.objects.values_list(*fields))
    report = poll_batches()
    assert list(BatchJob.objects.values_list(*fields)) == before
    assert "files_dispatched" not in report.counts


def test_files_are_read_once_however_often_they_are_dispatched(
    together: RunningSimulator, client: TogetherClient
) -> None:
    together.freeze_clock()
    start_batch(client, batch_lines(3))
    together.advance(30)
    dispatched: list[int] = []
    poll_batches(dispatch=dispatched.append)
    assert len(dispatched) == 1
    assert process_batch_files(dispatched[0]) is True
    assert process_batch_files(dispatched[0]) is False
    assert BatchJob.objects.get().files_attempts == 1


def test_a_reader_that_died_is_taken_over_after_its_lease(
    together: RunningSimulator, client: TogetherClient
) -> None:
    together.freeze_clock()
    start_batch(client, batch_lines(3))
    together.advance(30)
    poll_batches(dispatch=lambda pk: None)
    BatchJob.objects.update(files_state=BatchJob.FilesState.PROCESSING, files_claimed_at=timezone.now())
    assert files_to_read(timezone.now()) == []
    later = timezone.now() + timedelta(hours=1)
    assert files_to_read(later) == [BatchJob.objects.get().pk]


def test_the_remainder_command_refuses_an_unknown_batch(db: None) -> None:
    with pytest.raises(CommandError, match="poll_batches"):
        call_command("batch_remainder", "no-such-batch")


def test_an_upstream_batch_id_cannot_steer_the_remainder_path() -> None:
    assert remainder_name("../../etc/passwd") == "_.._etc_passwd.jsonl"
    assert "/" not in remainder_name("a/b\\c")
