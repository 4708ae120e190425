"""Answers against Together's published OpenAPI document (090263a), one documented shape per test.

The document is not read at test time: each test states the fields and types the document requires,
so a change to either side shows here. Where the document is wrong the SDKs win; those cases are
written down in docs/together-api-notes.md and asserted the SDKs' way (e.g. null `param` and `code`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import together

from together_dash.simulator import catalog
from together_dash.simulator.inference import REPLY
from together_dash.simulator.testing import RunningSimulator

MODEL = catalog.SMALL_CHAT_MODEL
MESSAGES = [{"role": "user", "content": "hi"}]
MODEL_TYPES = {"chat", "language", "code", "image", "embedding", "moderation", "rerank"}
ROLES = {"system", "user", "assistant", "function", "tool"}


def stream(http: httpx.Client, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    with http.stream("POST", path, json={**body, "stream": True}) as answer:
        return [json.loads(line[6:]) for line in answer.iter_lines() if line.startswith("data: {")]


def assert_fields(data: dict[str, Any], types: dict[str, type | tuple[type, ...]]) -> None:
    for name, kind in types.items():
        assert name in data, f"missing {name}"
        assert isinstance(data[name], kind), f"{name} is {type(data[name]).__name__}"


def test_text_completion_chunks_carry_role_token_and_finish_reason(http: httpx.Client) -> None:
    chunks = stream(http, "/completions", {"model": MODEL, "prompt": "Once"})

    for chunk in chunks:
        assert chunk["object"] == "completion.chunk"
        assert chunk["choices"][0]["delta"]["role"] == "assistant"
        assert_fields(chunk["token"], {"id": int, "text": str, "logprob": (int, float), "special": bool})
        assert "finish_reason" in chunk
    assert [c["finish_reason"] for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    assert chunks[-1]["finish_reason"] == "stop"
    assert chunks[-1]["token"]["special"] is True
    assert "".join(c["token"]["text"] for c in chunks) == "".join(REPLY)


def test_together_sdk_reads_text_completion_tokens(together_client: together.Together) -> None:
    chunks = list(together_client.completions.create(model=MODEL, prompt="Once", stream=True))

    assert "".join(c.token.text for c in chunks) == "".join(REPLY)
    assert {c.choices[0].delta.role for c in chunks} == {"assistant"}
    assert chunks[-1].finish_reason == "stop"


def test_chat_chunks_name_index_delta_role_and_finish_reason(http: httpx.Client) -> None:
    chunks = stream(http, "/chat/completions", {"model": MODEL, "messages": MESSAGES})

    for chunk in chunks:
        assert_fields(chunk, {"id": str, "object": str, "created": int, "model": str, "choices": list})
        choice = chunk["choices"][0]
        assert {"index", "delta", "finish_reason"} <= set(choice)
        assert choice["delta"]["role"] in ROLES
    assert "token" not in chunks[0]  # chat chunks have no top-level token


def test_error_bodies_have_message_and_type_and_null_param_and_code(http: httpx.Client) -> None:
    error = http.post("/chat/completions", json={"model": MODEL, "messages": []}).json()["error"]
    unknown = http.get("/nowhere").json()["error"]

    assert_fields(error, {"message": str, "type": str})
    assert error["param"] == "messages"
    assert error["code"] is None  # the document's 3.0-style `nullable` is ignored by 3.1; SDKs allow null
    assert_fields(unknown, {"message": str, "type": str, "code": str})


def test_models_are_model_info(http: httpx.Client) -> None:
    for model in http.get("/models").json():
        assert_fields(model, {"id": str, "created": int, "type": str})
        assert model["object"] == "model"
        assert model["type"] in MODEL_TYPES


@pytest.fixture
def finished_job(sim: RunningSimulator, tmp_path: Path, together_client: together.Together) -> str:
    sim.freeze_clock()
    path = tmp_path / "train.jsonl"
    line = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    path.write_text((json.dumps(line) + "\n") * 8)
    file_id = together_client.files.upload(path).id
    job_id = together_client.fine_tuning.create(training_file=file_id, model=MODEL).id
    sim.advance(3600)
    return job_id


def test_fine_tune_events_carry_an_integer_step(http: httpx.Client, finished_job: str) -> None:
    events = http.get(f"/fine-tunes/{finished_job}/events").json()["data"]

    required = {"created_at": str, "message": str, "type": str, "param_count": int, "token_count": int}
    for event in events:
        assert event["object"] == "fine-tune-event"
        assert_fields(
            event, {**required, "total_steps": int, "step": int, "training_offset": int, "hash": str}
        )
        assert_fields(event, {"wandb_url": str, "checkpoint_path": str, "model_path": str})
    assert any(event["step"] > 0 for event in events)


def test_fine_tune_checkpoints_and_files_have_their_documented_fields(
    http: httpx.Client, finished_job: str
) -> None:
    checkpoints = http.get(f"/fine-tunes/{finished_job}/checkpoints").json()["data"]
    files = http.get("/files").json()["data"]

    assert checkpoints
    for checkpoint in checkpoints:
        assert_fields(checkpoint, {"step": int, "path": str, "created_at": str, "checkpoint_type": str})
    for file in files:
        types = {"id": str, "created_at": int, "filename": str, "bytes": int, "purpose": str, "FileType": str}
        assert_fields(file, {**types, "Processed": bool})
        assert file["object"] == "file"


def test_batch_create_is_201_with_the_job(http: httpx.Client, tmp_path: Path) -> None:
    line = {"custom_id": "1", "body": {"model": MODEL, "messages": MESSAGES}}
    form = {"purpose": "batch-api", "file_name": "b.jsonl"}
    upload = http.post("/files/upload", files={"file": ("b.jsonl", json.dumps(line).encode())}, data=form)

    created = http.post(
        "/batches", json={"input_file_id": upload.json()["id"], "endpoint": "/v1/chat/completions"}
    )

    assert created.status_code == 201
    assert_fields(created.json()["job"], {"id": str, "input_file_id": str, "status": str})


def test_endpoints_hardware_and_rerank_have_their_documented_fields(http: httpx.Client) -> None:
    body = {
        "model": MODEL,
        "hardware": "1x_nvidia_a100_80gb_sxm",
        "autoscaling": {"min_replicas": 1, "max_replicas": 1},
    }
    endpoint = http.post("/endpoints", json=body).json()
    listed = http.get("/endpoints").json()["data"]
    hardware = http.get("/hardware", params={"model": MODEL}).json()["data"]
    ranked = http.post(
        "/rerank", json={"model": "Salesforce/Llama-Rank-V1", "query": "a", "documents": ["a"]}
    ).json()

    dedicated = {"id": str, "name": str, "display_name": str, "model": str, "hardware": str, "owner": str}
    assert_fields(endpoint, {**dedicated, "state": str, "autoscaling": dict, "created_at": str})
    assert (endpoint["object"], endpoint["type"]) == ("endpoint", "dedicated")
    for entry in listed:
        assert_fields(entry, {"id": str, "name": str, "model": str, "type": str, "owner": str, "state": str})
        assert entry["state"] in {"PENDING", "STARTING", "STARTED", "STOPPING", "STOPPED", "ERROR"}
    for hw in hardware:
        assert_fields(
            hw, {"id": str, "pricing": dict, "specs": dict, "updated_at": str, "availability": dict}
        )
        assert isinstance(hw["pricing"]["cents_per_minute"], float)
    assert ranked["object"] == "rerank"
    assert_fields(ranked["results"][0], {"index": int, "relevance_score": float, "document": dict})
