"""TogetherClient / AsyncTogetherClient against httpx.MockTransport: typed results, retries, errors."""
from __future__ import annotations

import asyncio
import json
import pickle
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest

from together_dash.together.client import (
    USER_AGENT,
    AsyncTogetherClient,
    TogetherAPIError,
    TogetherClient,
    key_fingerprint,
)
from together_dash.together.types import BatchStatus, FineTuneStatus

API_KEY = "tgp_v1_9fJqk2LmPzXw7RtYb4NcVd1SeHgUaQoI"
BASE = "https://api.together.xyz/v1"

MODELS = [
    {
        "id": "meta-llama/Llama-3.3-70B-Instruct-Turbo", "object": "model", "created": 1733443200,
        "type": "chat", "display_name": "Llama 3.3 70B Instruct Turbo", "organization": "Meta",
        "link": "https://hf.co/meta-llama",
        "license": "llama3.3", "context_length": 131072, "running": False,
        "pricing": {"hourly": 0, "input": 0.88, "output": 0.88, "base": 0, "finetune": 0},
        "config": {"chat_template": "...", "stop": ["<|eot_id|>"]},
    },
    {
        "id": "black-forest-labs/FLUX.1-schnell", "object": "model", "created": 1730000000, "type": "image",
        "pricing": {"hourly": 0, "input": 0, "output": 0, "base": 0.0027, "finetune": 0, "cached_input": 0},
    },
]

FT_TRUNCATED = {
    "id": "ft-8f2b7a1c-2d3e-4f5a-9b8c-7d6e5f4a3b2c", "status": "queued",
    "model": "meta-llama/Meta-Llama-3.1-8B-Instruct-Reference", "training_file": "file-1a2b",
    "model_output_name": "acme/Meta-Llama-3.1-8B-Instruct-Reference-support-bot",
    "created_at": "2026-04-28T10:00:00.123Z", "updated_at": "2026-04-28T10:00:01Z", "events": [],
}

FT_FULL = {
    **FT_TRUNCATED,
    "status": "running", "started_at": "2026-04-28T10:05:00Z", "n_epochs": 3, "epochs_completed": 1,
    "total_steps": 300, "steps_completed": 120, "token_count": 1_250_000, "param_count": 8_030_261_248,
    "total_price": 1520, "queue_depth": 0, "progress": {"estimate_available": True, "seconds_remaining": 840},
    "training_type": {"type": "Lora", "lora_r": 8}, "trainingfile_numlines": 1000,
    "events": [
        {"object": "fine-tune-event", "created_at": "2026-04-28T10:00:00Z", "level": "Info",
         "message": "Fine tune request created", "type": "JOB_PENDING", "hash": "abc"},
        {"object": "fine-tune-event", "created_at": "2026-04-28T10:20:00Z", "level": "info",
         "message": "Epoch completed, at step 100", "type": "epoch_complete", "step": 100,
         "total_steps": 300},
    ],
}

BATCH = {
    "id": "2a3b4c5d-6e7f-4a8b-9c0d-1e2f3a4b5c6d", "user_id": "user-1", "input_file_id": "file-batch-in",
    "file_size_bytes": 20480, "status": "IN_PROGRESS", "job_deadline": "2026-04-29T10:00:00Z",
    "created_at": "2026-04-28T10:00:00Z", "endpoint": "/v1/chat/completions", "progress": 42.5,
    "model_id": "meta-llama/Llama-3.3-70B-Instruct-Turbo", "output_file_id": "", "error_file_id": "",
}

FILE = {
    "id": "file-6f1a2b3c", "object": "file", "created_at": 1777400000, "filename": "train.jsonl",
    "bytes": 123456, "purpose": "fine-tune", "FileType": "jsonl", "Processed": True, "LineCount": 1000,
}

WHOAMI = {
    "api_key_id": "key_123", "organization_id": "org_1", "organization_name": "Acme",
    "project_id": "proj_1", "project_name": "Default", "project_slug": "default",
}


def error_body(message: str, type_: str = "invalid_request_error", code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


class Recorder:
    """A MockTransport handler serving queued responses and recording every request."""

    def __init__(self, *responses: httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]):
        self.responses = list(responses)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        item = self.responses.pop(0) if len(self.responses) > 1 else self.responses[0]
        if isinstance(item, Exception):
            raise item
        if callable(item):
            return item(request)
        # A fresh copy each time: a response object is consumed by the client that receives it.
        return httpx.Response(item.status_code, headers=item.headers, content=item.content)

    @property
    def calls(self) -> int:
        return len(self.requests)


def ok(body: object, status: int = 200, **headers: str) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers)


def fail(status: int, body: object, **headers: str) -> httpx.Response:
    return httpx.Response(status, json=body, headers={k.replace("_", "-"): v for k, v in headers.items()})


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def make_client(sleeps):
    clients: list[TogetherClient] = []

    def make(*responses, **options) -> tuple[TogetherClient, Recorder]:
        recorder = Recorder(*responses)
        client = TogetherClient(API_KEY, transport=httpx.MockTransport(recorder), sleep=sleeps.append,
                                jitter=lambda: 0.0, **options)
        clients.append(client)
        return client, recorder

    yield make
    for client in clients:
        client.close()


def run_async(*responses, sleeps: list[float], call, **options):
    """Build an AsyncTogetherClient, await call(client), and return (result, recorder)."""
    recorder = Recorder(*responses)

    async def record_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    async def main():
        async with AsyncTogetherClient(API_KEY, transport=httpx.MockTransport(recorder), sleep=record_sleep,
                                       jitter=lambda: 0.0, **options) as client:
            return await call(client)

    return asyncio.run(main()), recorder


# ---- the request itself -------------------------------------------------------------------------------

def test_it_sends_bearer_auth_user_agent_and_explicit_timeouts(make_client):
    client, recorder = make_client(ok(MODELS))
    client.list_models()
    request = recorder.requests[0]
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert request.headers["User-Agent"] == USER_AGENT and USER_AGENT.startswith("together-dash/")
    assert request.extensions["timeout"] == {"connect": 5.0, "read": 60.0, "write": 60.0, "pool": 60.0}
    assert str(request.url) == f"{BASE}/models"


def test_it_uses_the_configured_base_url_and_timeouts(make_client):
    client, recorder = make_client(
        ok(MODELS), base_url="http://127.0.0.1:8001/v1/", timeout=7, connect_timeout=2
    )
    client.list_models(dedicated=True)
    request = recorder.requests[0]
    assert str(request.url) == "http://127.0.0.1:8001/v1/models?dedicated=true"
    assert request.extensions["timeout"] == {"connect": 2, "read": 7, "write": 7, "pool": 7}


def test_it_refuses_an_empty_api_key():
    with pytest.raises(ValueError, match="api_key"):
        TogetherClient("")


def test_it_keeps_the_key_out_of_its_repr(make_client):
    client, _ = make_client(ok(MODELS))
    assert API_KEY not in repr(client)
    assert key_fingerprint(API_KEY) in repr(client)


def test_it_fingerprints_keys_as_16_hex_chars_of_sha256():
    assert key_fingerprint("abc") == "ba7816bf8f01cfea"
    assert key_fingerprint("abc") != key_fingerprint("abd")


def test_it_quotes_ids_so_they_stay_one_path_segment(make_client):
    client, recorder = make_client(ok(FT_FULL))
    client.get_fine_tune("../files")
    assert recorder.requests[0].url.raw_path == b"/v1/fine-tunes/..%2Ffiles"


# ---- typed results ------------------------------------------------------------------------------------

def test_it_lists_models_from_a_bare_array(make_client):
    client, _ = make_client(ok(MODELS, **{"x-request-id": "req-1", "x-ratelimit-remaining": "99"}))
    result = client.list_models()
    llama, flux = result.data
    assert llama.id == "meta-llama/Llama-3.3-70B-Instruct-Turbo"
    assert (llama.type, llama.context_length, llama.organization) == ("chat", 131072, "Meta")
    assert llama.pricing is not None and llama.pricing.input == 0.88 and llama.pricing.cached_input is None
    assert llama.raw["running"] is False
    assert flux.context_length is None and flux.pricing is not None and flux.pricing.base == 0.0027
    assert (result.status, result.request_id, result.ratelimit.request_remaining) == (200, "req-1", 99)
    assert result.elapsed_ms >= 0


def test_it_also_accepts_models_wrapped_in_data(make_client):
    client, _ = make_client(ok({"object": "list", "data": MODELS}, **{"cf-ray": "8f00-SJC"}))
    result = client.list_models()
    assert [m.id for m in result.data] == [MODELS[0]["id"], MODELS[1]["id"]]
    assert result.request_id == "8f00-SJC"


def test_it_returns_whoami(make_client):
    client, _ = make_client(ok(WHOAMI))
    who = client.whoami().data
    assert (who.organization_name, who.project_slug, who.user_id) == ("Acme", "default", None)


BILLING_PAGE = {
    "object": "list", "organization_id": "org_1", "billing_period": "2026-03", "currency": "USD",
    "earliest_window_start": "2026-03-10T09:00:00Z", "latest_window_end": "2026-03-10T11:00:00Z",
    "next_cursor": "c2",
    "data": [{
        "date": "2026-03-10", "start_time": "2026-03-10T09:00:00Z", "end_time": "2026-03-10T10:00:00Z",
        "line_items": [
            {"product_name": "Serverless Inference - Input Tokens", "quantity": "123456789012",
             "unit_price": "0.00000088", "cost": "108641.97432", "pricing_dimensions": {"model": "m"},
             "attributes": {"model": "m", "project_id": "p"}, "applied_credit": {"type": "PREPAID"}},
            {"product_name": "Dedicated Endpoints - Hardware Minutes", "quantity": "12.5",
             "unit_price": "0.0427", "cost": "0.53375", "pricing_dimensions": {}, "attributes": {}},
        ],
    }],
}


def test_it_reads_a_billing_usage_page_with_exact_decimals(make_client):
    client, recorder = make_client(ok(BILLING_PAGE))
    report = client.billing_usage("2026-03", after="c1", limit=500, organization_id="org_1").data
    (window,) = report.data
    tokens, minutes = window.line_items
    assert dict(recorder.requests[0].url.params) == {
        "month": "2026-03", "granularity": "hour", "after": "c1", "limit": "500", "organization_id": "org_1"
    }
    assert (report.organization_id, report.billing_period, report.next_cursor) == ("org_1", "2026-03", "c2")
    assert window.start_time == datetime(2026, 3, 10, 9, tzinfo=UTC)
    assert (tokens.quantity, tokens.unit_price, tokens.cost) == (
        Decimal("123456789012"), Decimal("0.00000088"), Decimal("108641.97432")
    )
    assert (tokens.applied_credit, minutes.applied_credit) == ("PREPAID", None)
    assert tokens.attributes == {"model": "m", "project_id": "p"}


def test_a_billing_amount_that_is_not_a_decimal_string_is_a_bad_response(make_client):
    broken = {**BILLING_PAGE, "data": [{**BILLING_PAGE["data"][0], "line_items": [
        {**BILLING_PAGE["data"][0]["line_items"][0], "cost": 0.1}
    ]}]}
    client, _ = make_client(ok(broken), max_retries=0)
    with pytest.raises(TogetherAPIError) as raised:
        client.billing_usage("2026-03")
    assert raised.value.kind == "bad_response"


def test_it_lists_truncated_fine_tunes(make_client):
    client, recorder = make_client(ok({"data": [FT_TRUNCATED]}))
    (job,) = client.list_fine_tunes().data
    assert job.id == FT_TRUNCATED["id"]
    assert job.status == FineTuneStatus.QUEUED and not job.is_terminal
    assert job.created_at == datetime(2026, 4, 28, 10, 0, 0, 123000, tzinfo=UTC)
    assert job.events == () and job.total_steps is None and job.progress_percent is None
    assert recorder.requests[0].url.path == "/v1/fine-tunes"


def test_it_gets_a_full_fine_tune_with_events_and_progress(make_client):
    client, _ = make_client(ok(FT_FULL))
    job = client.get_fine_tune(FT_FULL["id"]).data
    assert (job.steps_completed, job.total_steps, job.progress_percent) == (120, 300, 40.0)
    assert (job.seconds_remaining, job.total_price) == (840, 1520)
    assert job.param_count == 8_030_261_248
    assert job.started_at == datetime(2026, 4, 28, 10, 5, tzinfo=UTC)
    first, second = job.events
    assert (first.type, first.type_normalized) == ("JOB_PENDING", "job_pending")
    assert (second.step, second.level) == (100, "info")
    assert job.raw["training_type"]["lora_r"] == 8


def test_it_treats_user_error_as_terminal(make_client):
    client, _ = make_client(ok({**FT_TRUNCATED, "status": "user_error"}))
    job = client.get_fine_tune(FT_TRUNCATED["id"]).data
    assert job.is_terminal
    assert FineTuneStatus.TERMINAL == {"error", "user_error", "completed", "cancelled"}
    assert len(FineTuneStatus.ALL) == 10


def test_it_lists_fine_tune_events(make_client):
    client, recorder = make_client(ok({"object": "list", "data": FT_FULL["events"]}))
    events = client.list_fine_tune_events(FT_FULL["id"]).data
    assert [e.type_normalized for e in events] == ["job_pending", "epoch_complete"]
    assert recorder.requests[0].url.path == f"/v1/fine-tunes/{FT_FULL['id']}/events"


def test_it_creates_fine_tunes(make_client):
    client, recorder = make_client(ok(FT_TRUNCATED))
    created = client.create_fine_tune(model=FT_TRUNCATED["model"], training_file="file-1a2b", n_epochs=3)
    assert json.loads(recorder.requests[0].content) == {
        "model": FT_TRUNCATED["model"], "training_file": "file-1a2b", "n_epochs": 3,
    }
    assert created.data.id == FT_TRUNCATED["id"]


def test_it_lists_batches(make_client):
    client, _ = make_client(ok([BATCH, {**BATCH, "id": "b2", "status": "canceling"}]))
    first, second = client.list_batches().data
    assert (first.status, first.progress, first.file_size_bytes) == ("IN_PROGRESS", 42.5, 20480)
    assert first.output_file_id is None and not first.is_terminal
    assert first.job_deadline == datetime(2026, 4, 29, 10, tzinfo=UTC)
    assert second.status == BatchStatus.CANCELING
    assert first.model_id == BATCH["model_id"]


def test_it_unwraps_the_201_batch_create_response(make_client):
    wrapped = {"job": {**BATCH, "status": "VALIDATING"}, "warning": "low priority"}
    client, recorder = make_client(ok(wrapped, 201))
    result = client.create_batch("file-batch-in", model_id=BATCH["model_id"])
    assert (result.status, result.data.id, result.data.status, result.data.warning) == (
        201, BATCH["id"], "VALIDATING", "low priority",
    )
    assert json.loads(recorder.requests[0].content) == {
        "input_file_id": "file-batch-in", "endpoint": "/v1/chat/completions", "model_id": BATCH["model_id"],
    }


def test_it_tolerates_an_unwrapped_batch_create_response(make_client):
    client, _ = make_client(ok(BATCH, 201))
    assert client.create_batch("file-batch-in").data.id == BATCH["id"]


def test_it_reads_uploaded_files_with_capitalised_fields(make_client):
    client, _ = make_client(ok(FILE), ok({**FILE, "FileType": None, "type": "csv"}))
    uploaded = client.upload_file(b"{}\n", file_name="a.jsonl").data
    assert (uploaded.file_type, uploaded.processed, uploaded.line_count, uploaded.created_at) == (
        "jsonl", True, 1000, 1777400000,
    )
    assert client.upload_file(b"{}\n", file_name="a.csv").data.file_type == "csv"


def test_it_streams_file_content_in_chunks(make_client):
    content = bytes(range(256)) * 1000
    client, _ = make_client(httpx.Response(200, content=content))
    chunks = list(client.iter_file_content("file-out", chunk_size=4096))
    assert b"".join(chunks) == content
    assert len(chunks) > 1 and max(len(c) for c in chunks) <= 4096


def test_it_raises_a_classified_error_when_streaming_a_missing_file(make_client):
    client, _ = make_client(fail(404, error_body("File not found")))
    with pytest.raises(TogetherAPIError) as caught:
        list(client.iter_file_content("file-nope"))
    assert caught.value.kind == "endpoint_not_found"
    assert str(caught.value) == "File not found"


def test_it_uploads_bytes_as_multipart(make_client):
    client, recorder = make_client(ok(FILE))
    result = client.upload_file(b'{"text": "hi"}\n', purpose="fine-tune", file_name="train.jsonl")
    assert result.data.id == FILE["id"]
    request = recorder.requests[0]
    assert (request.method, request.url.path) == ("POST", "/v1/files/upload")
    assert request.headers["content-type"].startswith("multipart/form-data")
    body = request.content
    for part in (b'name="purpose"', b"fine-tune", b'name="file_name"', b'name="file_type"', b"jsonl",
                 b'filename="train.jsonl"', b'{"text": "hi"}'):
        assert part in body


def test_it_uploads_from_a_path_again_on_each_attempt(make_client, tmp_path, sleeps):
    path = tmp_path / "batch.jsonl"
    path.write_bytes(b'{"custom_id": "1", "body": {}}\n')
    client, recorder = make_client(fail(429, error_body("slow down")), ok(FILE))
    client.upload_file(path, purpose="batch-api")
    assert recorder.calls == 2
    assert all(b'{"custom_id": "1", "body": {}}' in r.content for r in recorder.requests)
    assert b'filename="batch.jsonl"' in recorder.requests[1].content


# ---- malformed success bodies -------------------------------------------------------------------------

@pytest.mark.parametrize("response", [
    httpx.Response(200, content=b"<html>Service temporarily down</html>"),
    httpx.Response(200, content=b""),
    httpx.Response(200, json={"object": "list"}),
    httpx.Response(200, json=[{"object": "model"}]),  # no id
    httpx.Response(200, json="models"),
])
def test_it_raises_bad_response_for_a_2xx_body_that_is_not_the_expected_json(make_client, response):
    client, recorder = make_client(response, max_retries=0)
    with pytest.raises(TogetherAPIError) as caught:
        client.list_models()
    error = caught.value
    assert (error.category, error.kind, error.status) == ("network", "bad_response", 200)


def test_it_retries_a_malformed_get_body(make_client, sleeps):
    client, recorder = make_client(httpx.Response(200, content=b"{trunc"), ok(MODELS))
    assert len(client.list_models().data) == 2
    assert recorder.calls == 2 and sleeps == [0.5]


# ---- errors and retries -------------------------------------------------------------------------------

def test_it_retries_a_429_after_x_ratelimit_reset(make_client, sleeps):
    limited = fail(429, error_body("You have been rate limited.", "dynamic_request_limited"),
                   x_ratelimit_reset="0.075")
    client, recorder = make_client(limited, ok(MODELS))
    result = client.list_models()
    assert len(result.data) == 2
    assert recorder.calls == 2
    assert sleeps == [0.075]


def test_it_prefers_retry_after_ms_when_present(make_client, sleeps):
    limited = fail(429, error_body("slow"), retry_after_ms="1200", x_ratelimit_reset="9")
    client, _ = make_client(limited, ok(MODELS))
    client.list_models()
    assert sleeps == [1.2]


def test_it_gives_up_at_once_when_the_server_asks_for_too_long_a_wait(make_client, sleeps):
    client, recorder = make_client(fail(429, error_body("slow", "dynamic_token_limited"), retry_after="3600"))
    with pytest.raises(TogetherAPIError) as caught:
        client.list_models()
    assert (caught.value.kind, caught.value.classified.retry_after) == ("token_rate_limited", 3600)
    assert recorder.calls == 1 and sleeps == []


def test_it_raises_the_last_429_after_max_retries(make_client, sleeps):
    client, recorder = make_client(fail(429, error_body("slow"), x_ratelimit_reset="1"), max_retries=3)
    with pytest.raises(TogetherAPIError) as caught:
        client.list_models()
    assert caught.value.category == "rate_limit"
    assert caught.value.ratelimit.reset_seconds == 1
    assert recorder.calls == 4 and sleeps == [1, 1, 1]


@pytest.mark.parametrize("status,kind", [
    (400, "invalid_request"), (401, "invalid_api_key"), (402, "insufficient_credits"),
    (403, "permission_denied"), (404, "endpoint_not_found"),
    (409, "invalid_request"), (422, "invalid_request"),
])
def test_it_never_retries_client_errors(make_client, sleeps, status, kind):
    client, recorder = make_client(fail(status, error_body("nope"), retry_after="1"))
    with pytest.raises(TogetherAPIError) as caught:
        client.list_models()
    assert (caught.value.status, caught.value.kind, caught.value.retryable) == (status, kind, False)
    assert recorder.calls == 1 and sleeps == []


def test_it_retries_a_503_with_backoff_then_succeeds(make_client, sleeps):
    client, recorder = make_client(fail(503, {"error": "overloaded"}), ok(MODELS))
    result = client.list_models()
    assert len(result.data) == 2
    assert recorder.calls == 2 and sleeps == [0.5]


def test_it_backs_off_exponentially_with_jitter(sleeps):
    recorder = Recorder(fail(500, error_body("Internal error", "server_error")))
    client = TogetherClient(API_KEY, transport=httpx.MockTransport(recorder), sleep=sleeps.append,
                            max_retries=5, jitter=lambda: 1.0)
    with client, pytest.raises(TogetherAPIError) as caught:
        client.list_models()
    assert caught.value.kind == "model_overloaded"
    assert sleeps == [0.375, 0.75, 1.5, 3.0, 6.0]  # min(0.5 * 2^n, 8) * (1 - 0.25)


@pytest.mark.parametrize("status,kind", [(502, "upstream_timeout"), (504, "upstream_timeout"),
                                         (500, "model_overloaded")])
def test_it_retries_server_errors(make_client, sleeps, status, kind):
    client, recorder = make_client(fail(status, error_body("x")))
    with pytest.raises(TogetherAPIError) as caught:
        client.list_models()
    assert (caught.value.kind, recorder.calls, sleeps) == (kind, 3, [0.5, 1.0])


def test_it_raises_network_timeout_after_retries(make_client, sleeps):
    client, recorder = make_client(httpx.ReadTimeout("timed out"))
    with pytest.raises(TogetherAPIError) as caught:
        client.list_models()
    error = caught.value
    assert (error.status, error.category, error.kind, error.retryable) == (None, "network", "timeout", True)
    assert recorder.calls == 3 and sleeps == [0.5, 1.0]
    assert isinstance(error.__cause__, httpx.ReadTimeout)


def test_it_wraps_connection_errors(make_client):
    client, _ = make_client(httpx.ConnectError("[Errno 111] Connection refused"), max_retries=0)
    with pytest.raises(TogetherAPIError) as caught:
        client.whoami()
    assert (caught.value.status, caught.value.kind) == (None, "connection_error")


def test_it_does_not_resend_a_create_after_an_ambiguous_failure(make_client, sleeps):
    client, recorder = make_client(fail(500, error_body("boom")), ok(BATCH, 201))
    with pytest.raises(TogetherAPIError):
        client.create_batch("file-batch-in")
    assert recorder.calls == 1 and sleeps == []


def test_it_resends_a_create_when_the_server_surely_did_not_act(make_client, sleeps):
    client, recorder = make_client(
        fail(429, error_body("slow")), httpx.ConnectError("refused"), ok(FT_TRUNCATED)
    )
    assert client.create_fine_tune(model="m", training_file="f").data.id == FT_TRUNCATED["id"]
    assert recorder.calls == 3


def test_it_classifies_a_missing_fine_tune_job_by_path(make_client):
    client, _ = make_client(fail(404, error_body("Fine-tune job not found")))
    with pytest.raises(TogetherAPIError) as caught:
        client.get_fine_tune("ft-gone")
    assert (caught.value.category, caught.value.kind) == ("not_found", "finetune_job_not_found")


def test_it_classifies_a_dataset_rejection_on_fine_tune_create(make_client):
    client, _ = make_client(fail(400, error_body("Line 3: missing `messages`")))
    with pytest.raises(TogetherAPIError) as caught:
        client.create_fine_tune(model="m", training_file="file-bad")
    assert caught.value.kind == "invalid_finetune_dataset"


def test_it_carries_status_headers_and_request_id_on_the_error(make_client):
    body = {"id": "o3LiXw4-62bZhn-96040daf687810ab", **error_body("Credit limit exceeded.", "credit_limit")}
    client, _ = make_client(fail(402, body, x_request_id="req-402"))
    with pytest.raises(TogetherAPIError) as caught:
        client.list_models()
    error = caught.value
    assert (error.status, error.request_id, error.headers["x-request-id"]) == (402, "req-402", "req-402")
    assert error.classified.pauses_traffic
    assert str(error) == "Credit limit exceeded."


@pytest.mark.parametrize("key", [API_KEY, "0123456789abcdef" * 4, "custom-shaped-secret-value"])
def test_it_never_puts_the_api_key_in_the_exception(sleeps, key):
    echo = f"Invalid API key provided: {key} (header was 'Authorization: Bearer {key}')"
    recorder = Recorder(fail(401, error_body(echo, code="invalid_api_key")))
    with TogetherClient(key, transport=httpx.MockTransport(recorder), sleep=sleeps.append) as client:
        with pytest.raises(TogetherAPIError) as caught:
            client.list_models()
    error = caught.value
    for text in (str(error), repr(error), repr(error.classified), str(error.args)):
        assert key not in text
    assert "Invalid API key provided" in str(error)


def test_its_error_survives_pickling_for_celery(make_client):
    body = error_body("Credit limit exceeded.", "credit_limit")
    client, _ = make_client(fail(402, body, x_request_id="r1"))
    with pytest.raises(TogetherAPIError) as caught:
        client.list_models()
    copy = pickle.loads(pickle.dumps(caught.value))  # noqa: S301 - our own bytes, as in Celery's result backend
    assert (copy.kind, copy.status, copy.request_id, str(copy)) == (
        "insufficient_credits", 402, "r1", "Credit limit exceeded.",
    )


def test_it_never_puts_the_api_key_in_a_transport_exception(make_client):
    client, _ = make_client(httpx.ConnectError(f"proxy rejected Bearer {API_KEY}"), max_retries=0)
    with pytest.raises(TogetherAPIError) as caught:
        client.list_models()
    assert API_KEY not in str(caught.value) and API_KEY not in repr(caught.value)


# ---- async --------------------------------------------------------------------------------------------

def test_the_async_client_returns_typed_results(sleeps):
    async def call(client: AsyncTogetherClient):
        models = await client.list_models()
        batch = await client.create_batch("file-batch-in")
        jobs = await client.list_fine_tunes()
        return models, batch, jobs

    (models, batch, jobs), recorder = run_async(
        ok(MODELS), ok({"job": BATCH}, 201), ok({"data": [FT_TRUNCATED]}), sleeps=sleeps, call=call,
    )
    assert [m.context_length for m in models.data] == [131072, None]
    assert (batch.status, batch.data.status) == (201, "IN_PROGRESS")
    assert jobs.data[0].id == FT_TRUNCATED["id"]
    request = recorder.requests[0]
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert request.extensions["timeout"] == {"connect": 5.0, "read": 60.0, "write": 60.0, "pool": 60.0}


def test_the_async_client_retries_a_429_after_x_ratelimit_reset(sleeps):
    limited = fail(429, error_body("slow", "dynamic_request_limited"), x_ratelimit_reset="2.5")
    result, recorder = run_async(limited, ok(WHOAMI), sleeps=sleeps, call=lambda c: c.whoami())
    assert result.data.organization_id == "org_1"
    assert recorder.calls == 2 and sleeps == [2.5]


@pytest.mark.parametrize("status", [400, 401, 402, 403, 404])
def test_the_async_client_never_retries_client_errors(sleeps, status):
    with pytest.raises(TogetherAPIError) as caught:
        run_async(fail(status, error_body("nope")), sleeps=sleeps, call=lambda c: c.list_models())
    assert caught.value.status == status and sleeps == []


def test_the_async_client_raises_network_timeout_after_retries(sleeps):
    with pytest.raises(TogetherAPIError) as caught:
        run_async(httpx.ConnectTimeout("connect timed out"), sleeps=sleeps, call=lambda c: c.list_models())
    assert (caught.value.category, caught.value.kind) == ("network", "timeout")
    assert sleeps == [0.5, 1.0]
    assert API_KEY not in repr(caught.value)


def test_the_async_client_streams_and_uploads_files(sleeps):
    content = b"x" * 10_000

    async def call(client: AsyncTogetherClient):
        chunks = [chunk async for chunk in client.iter_file_content("file-out", chunk_size=1000)]
        uploaded = await client.upload_file(b'{"text": "a"}\n', file_name="t.jsonl")
        return chunks, uploaded

    (chunks, uploaded), recorder = run_async(
        httpx.Response(200, content=content), ok(FILE), sleeps=sleeps, call=call,
    )
    assert b"".join(chunks) == content and len(chunks) == 10
    assert uploaded.data.id == FILE["id"]
    assert b'filename="t.jsonl"' in recorder.requests[1].content


# ---- dedicated endpoints and hardware ------------------------------------------------------------------

def test_list_endpoints_asks_for_dedicated_ones_and_drops_serverless_entries(make_client) -> None:
    listing = {"object": "list", "data": [
        {"id": "endpoint-1", "name": "org/mine-1", "model": "m", "hardware": "hw", "type": "dedicated",
         "state": "STARTED", "autoscaling": {"min_replicas": 1, "max_replicas": 3}, "inactive_timeout": 0},
        {"id": "endpoint-2", "name": "m", "model": "m", "type": "serverless", "state": "STARTED"},
    ]}
    client, recorder = make_client(ok(listing))

    endpoints = client.list_endpoints().data

    assert recorder.requests[0].url.params["type"] == "dedicated"
    assert [e.id for e in endpoints] == ["endpoint-1"]
    assert (endpoints[0].min_replicas, endpoints[0].max_replicas) == (1, 3)
    assert endpoints[0].inactive_timeout is None  # 0: never stops by itself


def test_list_hardware_reads_prices_exactly(make_client) -> None:
    body = b'{"data": [{"id": "hw", "pricing": {"cents_per_minute": 0.1000000000000000055}}]}'
    client, _ = make_client(httpx.Response(200, content=body, headers={"content-type": "application/json"}))

    assert client.list_hardware().data[0].cents_per_minute == Decimal("0.1000000000000000055")


def test_an_endpoint_listing_without_ids_is_a_bad_response(make_client) -> None:
    client, _ = make_client(ok({"data": [{"name": "no id", "type": "dedicated"}]}))

    with pytest.raises(TogetherAPIError) as raised:
        client.list_endpoints()

    assert raised.value.kind == "bad_response"
