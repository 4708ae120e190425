"""Batches: read a batch-api JSONL file, answer each line with the chat logic, write output/error files.

Progress is a function of the clock, applied lazily whenever a batch is read: VALIDATING for 2 s
(÷ job_speed), then IN_PROGRESS at `batch_lines_per_s × job_speed` lines per second, then COMPLETED.
Each answered line is a billed call; when credits run out the batch stops FAILED with only the lines
answered so far in its output file. Batch errors use Together's `{"error": "string"}` body.
"""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from together_dash.simulator import errors, inference
from together_dash.simulator.clock import iso
from together_dash.simulator.completions import charges, plan_chat
from together_dash.simulator.wire import Request, Response, dumps, json_response

if TYPE_CHECKING:
    from together_dash.simulator.state import SimulatorState

VALIDATE_S = 2.0
WINDOW_S = {"24h": 24 * 3600.0}
ENDPOINTS = frozenset({"/v1/chat/completions", "/v1/completions"})
TERMINAL = frozenset({"COMPLETED", "FAILED", "EXPIRED", "CANCELLED"})
CREDIT_ERROR = "Batch stopped: " + errors.CREDIT_LIMIT


@dataclass(slots=True)
class BatchJob:
    id: str
    user_id: str
    input_file_id: str
    file_size_bytes: int
    endpoint: str
    model_id: str
    created: float
    deadline: float
    lines_per_s: float
    validate_s: float
    status: str = "VALIDATING"
    started: float = 0.0
    lines: list[tuple[str, Any]] = field(default_factory=list)  # (custom_id, body or an error message)
    processed: int = 0
    outputs: list[bytes] = field(default_factory=list)
    failures: list[bytes] = field(default_factory=list)
    output_file_id: str | None = None
    error_file_id: str | None = None
    error: str | None = None
    completed_at: float | None = None
    organization_id: str | None = None  # whose bill its lines go on

    def to_json(self) -> dict[str, Any]:
        total = len(self.lines)
        progress = 100.0 if self.status == "COMPLETED" else (100.0 * self.processed / total if total else 0.0)
        return {
            "id": self.id,
            "user_id": self.user_id,
            "input_file_id": self.input_file_id,
            "file_size_bytes": self.file_size_bytes,
            "status": self.status,
            "job_deadline": iso(self.deadline),
            "created_at": iso(self.created),
            "endpoint": self.endpoint,
            "progress": round(progress, 2),
            "model_id": self.model_id,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "error": self.error,
            "completed_at": iso(self.completed_at) if self.completed_at is not None else None,
        }


class BatchStore:
    def __init__(self) -> None:
        self.batches: dict[str, BatchJob] = {}


def parse_lines(data: bytes) -> list[tuple[str, Any]]:
    """(custom_id, request body) per line; a line that is not a valid request keeps an error string."""
    parsed: list[tuple[str, Any]] = []
    for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            parsed.append((f"line-{number}", f"Line {number} is not valid JSON"))
            continue
        if not isinstance(item, dict) or not isinstance(item.get("body"), dict) or not item.get("custom_id"):
            custom_id = (
                str(item.get("custom_id") or f"line-{number}") if isinstance(item, dict) else f"line-{number}"
            )
            parsed.append((custom_id, f"Line {number} must be an object with custom_id and body"))
            continue
        parsed.append((str(item["custom_id"]), item["body"]))
    return parsed


def advance(state: SimulatorState, batch: BatchJob, now: float) -> None:
    """Bring the batch up to `now`: validate, answer the lines due by then, finish."""
    if batch.status in TERMINAL:
        return
    until = min(now, batch.deadline)
    if batch.status == "VALIDATING":
        if until < batch.created + batch.validate_s:
            _expire_if_due(state, batch, now)
            return
        _validate(state, batch)
        if batch.status in TERMINAL:
            return
    total = len(batch.lines)
    due = min(total, math.floor((until - batch.started) * batch.lines_per_s))
    while batch.processed < due:
        if not _answer(state, batch, batch.lines[batch.processed]):
            _finish(state, batch, "FAILED", batch.started + batch.processed / batch.lines_per_s, CREDIT_ERROR)
            return
        batch.processed += 1
    if batch.processed == total:
        _finish(state, batch, "COMPLETED", batch.started + total / batch.lines_per_s)
        return
    _expire_if_due(state, batch, now)


def _expire_if_due(state: SimulatorState, batch: BatchJob, now: float) -> None:
    if now >= batch.deadline:
        _finish(
            state, batch, "EXPIRED", batch.deadline, "Batch did not complete within its completion window"
        )


def _validate(state: SimulatorState, batch: BatchJob) -> None:
    stored = state.files.get(batch.input_file_id)
    lines = parse_lines(stored.data) if stored is not None else []
    batch.started = batch.created + batch.validate_s
    if not lines:
        _finish(state, batch, "FAILED", batch.started, "Input file is empty or was deleted")
        return
    batch.lines = lines
    batch.status = "IN_PROGRESS"
    if not batch.model_id:
        first = next((body for _, body in lines if isinstance(body, dict)), {})
        batch.model_id = str(first.get("model") or "")


def _answer(state: SimulatorState, batch: BatchJob, line: tuple[str, Any]) -> bool:
    """Answer one line; False means the credits ran out before it could be billed."""
    custom_id, body = line
    if isinstance(body, str):
        batch.failures.append(_error_line(custom_id, body, "invalid_request"))
        return True
    if not state.has_credit():
        return False
    request = dict(body)
    request.setdefault("model", batch.model_id)
    plan = plan_chat(state, request, organization_id=batch.organization_id)
    if isinstance(plan, tuple):
        status, raw = plan
        message = json.loads(raw)["error"]["message"]
        code = "invalid_model" if status == 404 or b"model_not_available" in raw else "invalid_request"
        batch.failures.append(_error_line(custom_id, message, code))
        return True
    state.bill(charges(state, request, plan, batch=True), batch.organization_id)
    response = {"status_code": 200, "body": inference.chat_completion_dict(plan)}
    batch.outputs.append(dumps({"custom_id": custom_id, "response": response}))
    return True


def _error_line(custom_id: str, message: str, code: str) -> bytes:
    return dumps({"custom_id": custom_id, "error": {"message": message, "code": code}})


def _finish(state: SimulatorState, batch: BatchJob, status: str, at: float, error: str | None = None) -> None:
    batch.status = status
    batch.completed_at = at
    batch.error = error
    if batch.outputs:
        data = b"\n".join(batch.outputs) + b"\n"
        batch.output_file_id = state.files.add(
            f"{batch.id}_output.jsonl", "batch-generated", data, created_at=at
        ).id
    if batch.failures:
        data = b"\n".join(batch.failures) + b"\n"
        batch.error_file_id = state.files.add(
            f"{batch.id}_error.jsonl", "batch-generated", data, created_at=at
        ).id


def _bad(message: str, status: int = 400) -> Response:
    return Response(status, errors.batch_body(message))


async def create(state: SimulatorState, request: Request) -> Response:
    body = request.json()
    if not isinstance(body, dict):
        return _bad("Request body must be a JSON object")
    endpoint = body.get("endpoint") or ""
    if endpoint not in ENDPOINTS:
        return _bad(f"Invalid endpoint '{endpoint}'. Supported: {', '.join(sorted(ENDPOINTS))}")
    stored = state.files.get(str(body.get("input_file_id") or ""))
    if stored is None:
        return _bad(f"Input file {body.get('input_file_id') or '(none)'} not found")
    if stored.purpose != "batch-api":
        return _bad(f"Input file {stored.id} has purpose '{stored.purpose}'; batches need 'batch-api'")
    window = str(body.get("completion_window") or "24h")
    if window not in WINDOW_S:
        return _bad(f"Invalid completion_window '{window}'. Supported: 24h")
    if not state.has_credit():
        return Response(402, errors.credit_limit())
    speed = state.scenario.job_speed
    now = state.clock.now()
    batch = BatchJob(
        id=str(uuid.uuid4()),
        user_id=state.whoami(request.key)["user_id"],
        input_file_id=stored.id,
        file_size_bytes=len(stored.data),
        endpoint=endpoint,
        model_id=str(body.get("model_id") or ""),
        created=now,
        deadline=now + WINDOW_S[window],
        lines_per_s=state.scenario.batch_lines_per_s * speed,
        validate_s=VALIDATE_S / speed,
        organization_id=state.organization_of(request.key),
    )
    state.batches.batches[batch.id] = batch
    return json_response({"job": batch.to_json()}, status=201)


async def list_batches(state: SimulatorState, request: Request) -> Response:
    now = state.clock.now()
    for batch in state.batches.batches.values():
        advance(state, batch, now)
    return json_response([batch.to_json() for batch in state.batches.batches.values()])


async def retrieve(state: SimulatorState, request: Request) -> Response:
    batch = state.batches.batches.get(request.params[0])
    if batch is None:
        return _bad(f"Batch job {request.params[0]} not found", 404)
    advance(state, batch, state.clock.now())
    return json_response(batch.to_json())


async def cancel(state: SimulatorState, request: Request) -> Response:
    batch = state.batches.batches.get(request.params[0])
    if batch is None:
        return _bad(f"Batch job {request.params[0]} not found", 404)
    now = state.clock.now()
    advance(state, batch, now)
    if batch.status in TERMINAL:
        return _bad(f"Batch job {batch.id} is already {batch.status} and cannot be cancelled")
    _finish(state, batch, "CANCELLED", now)
    return json_response(batch.to_json())
