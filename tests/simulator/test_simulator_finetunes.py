"""Fine-tune jobs through the together SDK: create, list, retrieve, events, cancel, failures."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest
import together

from together_dash.simulator import catalog
from together_dash.simulator.testing import RunningSimulator

MODEL = catalog.SMALL_CHAT_MODEL
FT_ID = re.compile(r"^ft-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$")
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
HAPPY_PATH = [
    "job_pending",
    "job_start",
    "model_downloading",
    "model_download_complete",
    "training_data_downloading",
    "training_data_download_complete",
    "training_start",
    "epoch_complete",
    "epoch_complete",
    "checkpoint_save",
    "training_complete",
    "model_compressing",
    "model_compression_complete",
    "model_uploading",
    "model_upload_complete",
    "job_complete",
]


@pytest.fixture
def training_file(tmp_path: Path, together_client: together.Together) -> str:
    # 40 samples at the default batch size of 32 make 2 steps per epoch.
    path = tmp_path / "train.jsonl"
    path.write_text(
        "".join(
            json.dumps(
                {
                    "messages": [
                        {"role": "user", "content": f"q{i}"},
                        {"role": "assistant", "content": f"a{i}"},
                    ]
                }
            )
            + "\n"
            for i in range(40)
        )
    )
    return together_client.files.upload(path).id


@pytest.fixture
def frozen(sim: RunningSimulator) -> RunningSimulator:
    sim.freeze_clock()
    return sim


def create(client: together.Together, training_file: str, **options: object) -> str:
    job = client.fine_tuning.create(training_file=training_file, model=MODEL, n_epochs=2, **options)
    return job.id


def test_create_returns_a_truncated_pending_job(
    frozen: RunningSimulator, together_client: together.Together, training_file: str
) -> None:
    job = together_client.fine_tuning.create(
        training_file=training_file, model=MODEL, n_epochs=2, suffix="demo"
    )

    assert FT_ID.match(job.id)
    assert job.status == "pending"
    assert job.events == []
    assert job.model == MODEL
    assert job.training_file == training_file
    assert job.output_name.endswith(job.id[3:9])
    assert "-demo-" in job.output_name


def test_job_advances_through_every_status_with_the_clock(
    frozen: RunningSimulator, together_client: together.Together, training_file: str
) -> None:
    job_id = create(together_client, training_file)
    seen = []
    # pending 2 s, queued 3 s, 4 steps x 2 s, compressing 5 s, uploading 5 s
    for step in (0, 2, 3, 4, 4, 5, 5):
        frozen.advance(step)
        job = together_client.fine_tuning.retrieve(job_id)
        seen.append((job.status, job.steps_completed, job.epochs_completed))

    assert seen == [
        ("pending", 0, 0),
        ("queued", 0, 0),
        ("running", 0, 0),
        ("running", 2, 1),
        ("compressing", 4, 2),
        ("uploading", 4, 2),
        ("completed", 4, 2),
    ]
    assert [e.type for e in job.events] == HAPPY_PATH
    assert job.total_steps == 4
    assert job.progress.seconds_remaining == 0


def test_events_endpoint_and_list(
    frozen: RunningSimulator, together_client: together.Together, training_file: str
) -> None:
    job_id = create(together_client, training_file)
    frozen.advance(7)

    events = together_client.fine_tuning.list_events(job_id).data
    listed = together_client.fine_tuning.list().data

    assert [e.type for e in events] == HAPPY_PATH[:7]
    assert all(e.object == "fine-tune-event" and ISO_Z.match(e.created_at) for e in events)
    assert [j.id for j in listed] == [job_id]
    assert listed[0].status == "running"
    assert listed[0].events == []


def test_timestamps_are_iso_8601_with_z(
    frozen: RunningSimulator, together_client: together.Together, training_file: str, http: httpx.Client
) -> None:
    job_id = create(together_client, training_file)
    frozen.advance(6)

    raw = http.get(f"/fine-tunes/{job_id}").json()

    assert ISO_Z.match(raw["created_at"])
    assert ISO_Z.match(raw["updated_at"])
    assert ISO_Z.match(raw["started_at"])


def test_cancel_requests_then_cancels(
    frozen: RunningSimulator, together_client: together.Together, training_file: str
) -> None:
    job_id = create(together_client, training_file)
    frozen.advance(6)

    cancelled = together_client.fine_tuning.cancel(job_id)
    frozen.advance(1)
    job = together_client.fine_tuning.retrieve(job_id)

    assert cancelled.status == "cancel_requested"
    assert job.status == "cancelled"
    assert [e.type for e in job.events][-2:] == ["cancel_requested", "job_stopped"]
    with pytest.raises(together.BadRequestError):
        together_client.fine_tuning.cancel(job_id)


@pytest.mark.parametrize("status", ["error", "user_error"])
def test_scenario_failure_ends_the_job_in_error(
    frozen: RunningSimulator, together_client: together.Together, training_file: str, status: str
) -> None:
    frozen.set_scenario(finetune_failure={"status": status, "at_progress": 0.5})
    job_id = create(together_client, training_file)

    frozen.advance(8.9)
    running = together_client.fine_tuning.retrieve(job_id)
    frozen.advance(0.1)
    failed = together_client.fine_tuning.retrieve(job_id)
    frozen.advance(60)

    assert running.status == "running"
    assert failed.status == status
    assert failed.events[-1].type == "job_error"
    assert failed.events[-1].level == "error"
    assert together_client.fine_tuning.retrieve(job_id).status == status


def test_suffix_can_ask_for_a_failure(
    frozen: RunningSimulator, together_client: together.Together, training_file: str
) -> None:
    job_id = create(together_client, training_file, suffix="sim-user-error")
    frozen.advance(60)

    assert together_client.fine_tuning.retrieve(job_id).status == "user_error"


def test_job_speed_makes_jobs_finish_in_seconds(
    sim: RunningSimulator, together_client: together.Together, training_file: str
) -> None:
    sim.set_scenario(job_speed=1000)
    job_id = create(together_client, training_file)
    sim.advance(0.05)

    assert together_client.fine_tuning.retrieve(job_id).status == "completed"


def test_unknown_job_is_404(together_client: together.Together) -> None:
    with pytest.raises(together.NotFoundError, match="ft-00000000-0000-4000-8000-000000000000"):
        together_client.fine_tuning.retrieve("ft-00000000-0000-4000-8000-000000000000")


def test_create_checks_model_and_training_file(
    together_client: together.Together, training_file: str
) -> None:
    with pytest.raises(together.BadRequestError, match="file-missing"):
        together_client.fine_tuning.create(training_file="file-missing", model=MODEL)
    with pytest.raises(together.BadRequestError, match="not available for fine-tuning"):
        together_client.fine_tuning.create(training_file=training_file, model=catalog.DEFAULT_EMBEDDING_MODEL)


def test_create_without_credit_is_402(
    sim: RunningSimulator, together_client: together.Together, training_file: str
) -> None:
    sim.set_credits(0)

    with pytest.raises(together.APIStatusError) as caught:
        together_client.fine_tuning.create(training_file=training_file, model=MODEL)

    assert caught.value.status_code == 402
