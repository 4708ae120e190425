"""Batches through the together SDK: real input, output and error files, credits running out mid-batch."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import together

from together_dash.simulator import catalog, errors
from together_dash.simulator.testing import RunningSimulator

MODEL = catalog.SMALL_CHAT_MODEL


def batch_file(tmp_path: Path, client: together.Together, lines: list[dict]) -> str:
    path = tmp_path / "batch.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return client.files.upload(path, purpose="batch-api", check=False).id


def request(custom_id: str, model: str = MODEL) -> dict:
    return {
        "custom_id": custom_id,
        "body": {"model": model, "messages": [{"role": "user", "content": custom_id}]},
    }


def jsonl(client: together.Together, file_id: str) -> list[dict]:
    return [json.loads(line) for line in client.files.content(file_id).read().splitlines()]


@pytest.fixture
def frozen(sim: RunningSimulator) -> RunningSimulator:
    sim.freeze_clock()
    return sim


def test_batch_runs_to_completion_with_output_and_error_files(
    frozen: RunningSimulator, tmp_path: Path, together_client: together.Together
) -> None:
    lines = [request(f"r{i}") for i in range(10)] + [request("bad", "nope/missing-model")]
    input_id = batch_file(tmp_path, together_client, lines)

    created = together_client.batches.create(input_file_id=input_id, endpoint="/v1/chat/completions")
    frozen.advance(2)  # validation
    validated = together_client.batches.retrieve(created.job.id)
    frozen.advance(0.25)  # 20 lines per second
    halfway = together_client.batches.retrieve(created.job.id)
    frozen.advance(10)
    done = together_client.batches.retrieve(created.job.id)

    assert created.job.status == "VALIDATING"
    assert validated.status == "IN_PROGRESS"
    assert validated.progress == 0
    assert 0 < halfway.progress < 100
    assert done.status == "COMPLETED"
    assert done.progress == 100
    assert done.completed_at is not None
    outputs = jsonl(together_client, done.output_file_id)
    assert [line["custom_id"] for line in outputs] == [f"r{i}" for i in range(10)]
    assert outputs[0]["response"]["status_code"] == 200
    assert outputs[0]["response"]["body"]["object"] == "chat.completion"
    failures = jsonl(together_client, done.error_file_id)
    assert failures == [
        {"custom_id": "bad", "error": {"message": failures[0]["error"]["message"], "code": "invalid_model"}}
    ]


def test_credits_running_out_stop_the_batch_with_partial_output(
    frozen: RunningSimulator, tmp_path: Path, together_client: together.Together
) -> None:
    input_id = batch_file(tmp_path, together_client, [request(f"r{i}") for i in range(10)])
    batch_id = together_client.batches.create(input_file_id=input_id, endpoint="/v1/chat/completions").job.id
    frozen.set_credits(4)

    frozen.advance(60)
    failed = together_client.batches.retrieve(batch_id)

    assert failed.status == "FAILED"
    assert "Credit limit exceeded" in failed.error
    assert failed.progress == 40
    assert [line["custom_id"] for line in jsonl(together_client, failed.output_file_id)] == [
        "r0",
        "r1",
        "r2",
        "r3",
    ]


def test_create_is_201_wrapped_and_list_is_a_bare_array(
    frozen: RunningSimulator, tmp_path: Path, together_client: together.Together, http: httpx.Client
) -> None:
    input_id = batch_file(tmp_path, together_client, [request("r0")])

    created = http.post("/batches", json={"input_file_id": input_id, "endpoint": "/v1/chat/completions"})
    listed = http.get("/batches").json()
    batch = http.get(f"/batches/{created.json()['job']['id']}").json()

    assert created.status_code == 201
    assert set(created.json()) == {"job"}
    assert isinstance(listed, list)
    assert listed[0]["id"] == batch["id"]
    assert batch["status"] == "VALIDATING"
    assert batch["endpoint"] == "/v1/chat/completions"
    assert batch["job_deadline"].endswith("Z")
    assert [b.id for b in together_client.batches.list()] == [batch["id"]]


def test_cancel_keeps_what_was_done(
    frozen: RunningSimulator, tmp_path: Path, together_client: together.Together
) -> None:
    input_id = batch_file(tmp_path, together_client, [request(f"r{i}") for i in range(100)])
    batch_id = together_client.batches.create(input_file_id=input_id, endpoint="/v1/chat/completions").job.id
    frozen.advance(2.5)

    cancelled = together_client.batches.cancel(batch_id)

    assert cancelled.status == "CANCELLED"
    assert len(jsonl(together_client, cancelled.output_file_id)) == 10


def test_batch_errors_use_the_string_shape(http: httpx.Client) -> None:
    missing = http.get("/batches/00000000-0000-4000-8000-000000000000")
    bad_file = http.post("/batches", json={"input_file_id": "file-nope", "endpoint": "/v1/chat/completions"})

    assert missing.status_code == 404
    assert isinstance(missing.json()["error"], str)
    assert bad_file.status_code == 400
    assert "file-nope" in bad_file.json()["error"]


def test_batch_with_no_credit_is_refused(
    sim: RunningSimulator, tmp_path: Path, together_client: together.Together
) -> None:
    input_id = batch_file(tmp_path, together_client, [request("r0")])
    sim.set_credits(0)

    with pytest.raises(together.APIStatusError) as caught:
        together_client.batches.create(input_file_id=input_id, endpoint="/v1/chat/completions")

    assert caught.value.status_code == 402
    assert errors.CREDIT_LIMIT in str(caught.value)
