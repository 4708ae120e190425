"""The error classifier, row by row of the DESIGN.md taxonomy, with the real bodies of ref §3.3."""
from __future__ import annotations

import json
import random

import httpx
import pytest

from together_dash.together.errors import (
    CATEGORIES,
    KINDS,
    MESSAGE_LIMIT,
    TAXONOMY,
    classify_bad_response,
    classify_error,
)

MODEL = "meta-llama/Llama-3.3-70B-Instruct-Turbo"


def standard(message: str, type_: str | None = "invalid_request_error", code: str | None = None,
             param: str | None = None, **extra: object) -> dict:
    """The standard Together error body, optionally with a top-level id."""
    return {**extra, "error": {"message": message, "type": type_, "param": param, "code": code}}


def as_bytes(body: dict) -> bytes:
    return json.dumps(body).encode()


INVALID_KEY = (
    "Invalid API key provided. You can find your API key at https://api.together.xyz/settings/api-keys."
)
UNKNOWN_MODEL = (
    f"Unable to access model {MODEL}. Please visit https://api.together.xyz to see the list of supported "
    "models or contact the owner to request access."
)
NON_SERVERLESS = (
    f"Unable to access non-serverless model {MODEL}. Please visit https://api.together.ai/models/{MODEL} "
    "to create and start a new dedicated endpoint for the model."
)
ENDPOINT_STOPPED = (
    f"The dedicated endpoint for {MODEL} is not running. Please visit https://api.together.ai/models "
    "to start the endpoint."
)
CONTEXT_OVERFLOW = (
    "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 8193. "
    "Given: 7000 `inputs` tokens and 2000 `max_new_tokens`"
)
CONTEXT_403 = (
    "Input token count + max_tokens parameter must be less than the context length of the model "
    "being queried."
)
NO_CREDIT = (
    "Credit limit exceeded. Please navigate to https://api.together.xyz/settings/billing to add credit "
    "or upgrade your plan."
)
RATE_2024 = (
    "You have been rate limited. Your rate limit is 60 queries per minute. Please navigate to "
    "https://api.together.xyz/settings/billing to upgrade to a paid plan."
)
TIER_GATED = (
    "Access to this model is allowed for build tier 2 and above. Also please make sure that you have a "
    "positive balance"
)


# ---- the taxonomy itself ---------------------------------------------------------------------------

def test_it_lists_the_seven_categories_in_display_order():
    assert CATEGORIES == ("auth", "billing", "rate_limit", "validation", "not_found", "server", "network")


def test_it_describes_every_kind_with_a_category_cause_and_fix():
    for kind, info in TAXONOMY.items():
        assert info.category in CATEGORIES, kind
        assert info.cause.strip() and info.fix.strip(), kind
        assert info.retryable is (info.category in ("rate_limit", "server", "network")), kind
    assert set(KINDS) == {
        "invalid_api_key", "insufficient_credits", "token_limit_exceeded", "permission_denied",
        "model_not_found", "model_not_available", "invalid_finetune_dataset", "invalid_request",
        "finetune_job_not_found", "endpoint_not_found", "request_rate_limited", "token_rate_limited",
        "rate_limited", "model_overloaded", "service_unavailable", "upstream_timeout", "timeout",
        "connection_error", "bad_response", "app_key_rejected",
    }


def test_it_tells_billing_owners_where_to_add_credits():
    category, retryable, _cause, fix = TAXONOMY["insufficient_credits"]
    assert (category, retryable) == ("billing", False)
    assert fix == (
        "Add credits at https://api.together.ai/settings/billing; resume from the last successful request."
    )


# ---- auth and billing -----------------------------------------------------------------------------

def test_it_classifies_401_as_invalid_api_key():
    body = standard(INVALID_KEY, code="invalid_api_key")
    error = classify_error(401, as_bytes(body))
    assert (error.category, error.kind, error.retryable) == ("auth", "invalid_api_key", False)
    assert error.message == INVALID_KEY
    assert (error.error_type, error.error_code) == ("invalid_request_error", "invalid_api_key")
    assert error.status == 401
    assert error.cause == TAXONOMY["invalid_api_key"].cause


def test_it_classifies_402_as_billing():
    body = standard(NO_CREDIT, type_="credit_limit", id="o3LiXw4-62bZhn-96040daf687810ab")
    error = classify_error(402, as_bytes(body), {"x-ratelimit-reset": "5"})
    assert (error.category, error.kind, error.retryable) == ("billing", "insufficient_credits", False)
    assert error.message == NO_CREDIT
    assert error.error_type == "credit_limit"
    assert error.request_id == "o3LiXw4-62bZhn-96040daf687810ab"
    assert error.retry_after is None  # waiting does not bring credits back
    assert error.pauses_traffic


def test_it_classifies_403_about_context_as_token_limit_exceeded():
    error = classify_error(403, as_bytes(standard(CONTEXT_403)))
    assert (error.category, error.kind, error.retryable) == ("validation", "token_limit_exceeded", False)
    assert error.message == CONTEXT_403


def test_it_classifies_other_403_as_permission_denied():
    error = classify_error(403, as_bytes(standard(TIER_GATED)))
    assert (error.category, error.kind, error.retryable) == ("auth", "permission_denied", False)
    assert "build tier 2" in error.message


def test_it_classifies_a_tier_gated_400_as_permission_denied():
    assert classify_error(400, standard(TIER_GATED)).kind == "permission_denied"


# ---- validation ------------------------------------------------------------------------------------

def test_it_classifies_the_real_context_overflow_400_as_token_limit_exceeded():
    body = as_bytes(standard(CONTEXT_OVERFLOW, param="max_tokens"))
    error = classify_error(400, body, path="/chat/completions")
    assert (error.category, error.kind, error.retryable) == ("validation", "token_limit_exceeded", False)
    assert error.message == CONTEXT_OVERFLOW
    assert error.param == "max_tokens"


@pytest.mark.parametrize("body", [
    standard(CONTEXT_OVERFLOW),
    standard("Token limit exceeded for this request"),
    standard("max_tokens is too large", param="max_tokens"),
])
def test_it_recognises_each_token_limit_signal_on_400(body):
    assert classify_error(400, body).kind == "token_limit_exceeded"


def test_it_classifies_the_2024_unknown_model_404_as_model_not_found():
    body = as_bytes(standard(UNKNOWN_MODEL, code="model_not_found"))
    error = classify_error(404, body, path="/chat/completions")
    assert (error.category, error.kind, error.retryable) == ("validation", "model_not_found", False)
    assert error.message == UNKNOWN_MODEL


@pytest.mark.parametrize("status,body", [
    (400, standard("whatever", code="model_not_found")),
    (400, standard(UNKNOWN_MODEL)),
    (404, standard("Model not found")),
])
def test_it_recognises_model_not_found_by_code_or_wording(status, body):
    assert classify_error(status, body).kind == "model_not_found"


def test_it_classifies_a_non_serverless_model_as_model_not_available():
    error = classify_error(400, as_bytes(standard(NON_SERVERLESS, code="model_not_available")))
    assert (error.category, error.kind, error.retryable) == ("validation", "model_not_available", False)
    assert error.message == NON_SERVERLESS


def test_it_classifies_non_serverless_wording_without_a_code_as_model_not_available():
    # "Unable to access non-serverless model" also starts like the model-not-found wording.
    assert classify_error(400, standard(NON_SERVERLESS)).kind == "model_not_available"


def test_it_classifies_a_stopped_dedicated_endpoint_as_model_not_available():
    error = classify_error(400, as_bytes(standard(ENDPOINT_STOPPED, code="dedicated_endpoint_not_running")))
    assert (error.category, error.kind) == ("validation", "model_not_available")
    assert error.error_code == "dedicated_endpoint_not_running"
    assert classify_error(400, standard(ENDPOINT_STOPPED, code=None)).kind == "model_not_available"


@pytest.mark.parametrize("path", ["/fine-tunes", "/v1/fine-tunes", "POST /v1/fine-tunes", "/files/upload"])
def test_it_classifies_a_400_on_fine_tune_create_or_upload_as_invalid_finetune_dataset(path):
    body = standard("Line 7: `messages[1]` must contain a `role` field")
    error = classify_error(400, body, path=path)
    assert (error.category, error.kind, error.retryable) == ("validation", "invalid_finetune_dataset", False)
    assert error.message == "Line 7: `messages[1]` must contain a `role` field"


def test_it_does_not_blame_the_dataset_for_a_400_when_listing_fine_tunes():
    error = classify_error(400, standard("bad query"), path="/fine-tunes", method="GET")
    assert error.kind == "invalid_request"


def test_it_blames_the_base_model_not_the_dataset_when_fine_tune_create_names_an_unknown_model():
    assert classify_error(400, standard(UNKNOWN_MODEL), path="/fine-tunes").kind == "model_not_found"


@pytest.mark.parametrize("status", [400, 409, 415, 422])
def test_it_classifies_other_client_errors_as_invalid_request(status):
    error = classify_error(status, standard("temperature must be between 0 and 2", param="temperature"))
    assert (error.category, error.kind, error.retryable) == ("validation", "invalid_request", False)
    assert error.message == "temperature must be between 0 and 2"
    assert error.param == "temperature"


# ---- not found --------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/fine-tunes/ft-0b5b6f9e-4a4c", "https://api.together.xyz/v1/fine-tunes/ft-1/events"])
def test_it_classifies_404_on_a_fine_tune_job_as_finetune_job_not_found(path):
    error = classify_error(404, standard("Fine-tune job not found", code=None), path=path)
    assert (error.category, error.kind, error.retryable) == ("not_found", "finetune_job_not_found", False)


def test_it_classifies_other_404_as_endpoint_not_found():
    error = classify_error(404, b"404 page not found", path="/v1/chat/completion")
    assert (error.category, error.kind, error.retryable) == ("not_found", "endpoint_not_found", False)
    assert error.message == "404 page not found"


# ---- rate limits ------------------------------------------------------------------------------------

def test_it_classifies_429_dynamic_request_limited_as_request_rate_limited():
    body = standard("You have been rate limited.", type_="dynamic_request_limited")
    error = classify_error(429, as_bytes(body), {"x-ratelimit-reset": "0.075"})
    assert (error.category, error.kind, error.retryable) == ("rate_limit", "request_rate_limited", True)
    assert error.retry_after == pytest.approx(0.075)
    assert error.message == "You have been rate limited."


def test_it_classifies_429_dynamic_token_limited_as_token_rate_limited():
    body = standard("You have been rate limited.", type_="dynamic_token_limited")
    error = classify_error(429, as_bytes(body), {"X-RateLimit-Reset": "2"})
    assert (error.category, error.kind, error.retryable, error.retry_after) == (
        "rate_limit", "token_rate_limited", True, 2,
    )


def test_it_treats_the_2024_credit_limit_429_as_a_rate_limit_not_billing():
    error = classify_error(429, as_bytes(standard(RATE_2024, type_="credit_limit")))
    assert (error.category, error.kind, error.retryable) == ("rate_limit", "rate_limited", True)
    assert error.message == RATE_2024
    assert error.retry_after is None


def test_it_prefers_retry_after_ms_over_retry_after_over_reset():
    headers = {"retry-after-ms": "1500", "retry-after": "3", "x-ratelimit-reset": "9"}
    assert classify_error(429, b"", headers).retry_after == pytest.approx(1.5)
    assert classify_error(503, b"", {"retry-after": "3", "x-ratelimit-reset": "9"}).retry_after == 3


# ---- server -----------------------------------------------------------------------------------------

def test_it_classifies_500_as_model_overloaded():
    error = classify_error(500, standard("Internal server error", type_="server_error"), {"retry-after": "2"})
    assert (error.category, error.kind, error.retryable, error.retry_after) == (
        "server", "model_overloaded", True, 2,
    )


def test_it_classifies_503_as_service_unavailable():
    error = classify_error(503, b"The server is overloaded or not ready yet.")
    assert (error.category, error.kind, error.retryable) == ("server", "service_unavailable", True)
    assert error.message == "The server is overloaded or not ready yet."


@pytest.mark.parametrize("status", [502, 504])
def test_it_classifies_gateway_errors_as_upstream_timeout(status):
    error = classify_error(status, b"")
    assert (error.category, error.kind, error.retryable) == ("server", "upstream_timeout", True)
    assert str(status) in error.message


def test_it_reduces_an_html_error_page_to_its_title():
    page = (
        "<!DOCTYPE html><html><head><title>api.together.xyz | 524: A timeout occurred</title>"
        "<style>body{color:red}</style></head><body><h1>A timeout occurred</h1>"
        + "<p>filler</p>" * 500 + "</body></html>"
    )
    error = classify_error(524, page.encode())
    assert error.kind == "upstream_timeout"
    assert error.message == "api.together.xyz | 524: A timeout occurred"


def test_it_reduces_an_html_page_without_title_to_its_visible_text():
    page = "<html><body><script>var x = 1;</script><center><h1>502 Bad Gateway</h1></center></body></html>"
    error = classify_error(502, page)
    assert error.message == "502 Bad Gateway"


def test_it_explains_an_empty_body_by_its_status():
    error = classify_error(503, b"")
    assert error.kind == "service_unavailable"
    assert error.message == "HTTP 503 Service Unavailable with no error message."


# ---- network ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("exc", [
    httpx.ReadTimeout("timed out"),
    httpx.ConnectTimeout("connect timed out"),
    httpx.PoolTimeout("pool"),
    TimeoutError("socket timed out"),
])
def test_it_classifies_timeouts_as_network_timeout(exc):
    error = classify_error(None, None, exc=exc)
    assert (error.category, error.kind, error.retryable, error.status) == ("network", "timeout", True, None)
    assert type(exc).__name__ in error.message


@pytest.mark.parametrize("exc", [
    httpx.ConnectError("[Errno 111] Connection refused"),
    httpx.ReadError("Connection reset by peer"),
    httpx.RemoteProtocolError("Server disconnected without sending a response."),
    ConnectionResetError(104, "Connection reset by peer"),
    ConnectionRefusedError(111, "Connection refused"),
])
def test_it_classifies_connection_failures_as_connection_error(exc):
    error = classify_error(None, None, exc=exc)
    assert (error.category, error.kind, error.retryable) == ("network", "connection_error", True)


def test_it_classifies_a_timeout_while_reading_a_200_body_as_timeout():
    assert classify_error(200, None, exc=httpx.ReadTimeout("")).kind == "timeout"


def test_it_classifies_an_unparseable_200_body_as_bad_response():
    error = classify_error(200, b"<html>maintenance</html>", exc=ValueError("Expecting value"))
    assert (error.category, error.kind, error.retryable) == ("network", "bad_response", True)
    assert "maintenance" in error.message


def test_it_classifies_a_2xx_that_reached_the_classifier_as_bad_response():
    assert classify_error(200, {"unexpected": True}).kind == "bad_response"


def test_it_lets_callers_force_bad_response_for_a_malformed_error_body():
    error = classify_bad_response(500, b"\x00\x01 not json")
    assert (error.category, error.kind, error.status) == ("network", "bad_response", 500)


def test_it_keeps_the_status_meaning_when_an_error_body_is_garbage():
    error = classify_error(402, bytes(range(256)))
    assert error.kind == "insufficient_credits"
    assert "\x00" not in error.message


def test_it_reads_invalid_utf8_with_replacement_characters():
    error = classify_error(400, b'{"error": {"message": "bad \xff\xfe byte"}}')
    assert error.kind == "invalid_request"
    assert error.message.startswith("bad ")


def test_it_reads_the_batch_string_error_shape():
    error = classify_error(400, b'{"error": "input_file_id file-123 does not exist"}', path="/batches")
    assert (error.kind, error.message, error.error_type) == (
        "invalid_request", "input_file_id file-123 does not exist", None,
    )


def test_it_reads_a_top_level_message_shape():
    error = classify_error(401, {"message": "Unauthorized", "type": "auth_error"})
    assert (error.kind, error.message, error.error_type) == ("invalid_api_key", "Unauthorized", "auth_error")


def test_it_takes_the_request_id_from_headers_first():
    body = standard("boom", id="body-id")
    assert classify_error(500, body, {"X-Request-Id": "req-1", "cf-ray": "ray-1"}).request_id == "req-1"
    assert classify_error(500, body, {"cf-ray": "ray-1"}).request_id == "ray-1"
    assert classify_error(500, body).request_id == "body-id"


def test_it_treats_no_status_and_no_exception_as_a_connection_error():
    assert classify_error(None, None).kind == "connection_error"


# ---- safety -----------------------------------------------------------------------------------------

HEX_KEY = "0123456789abcdef" * 4
TGP_KEY = "tgp_v1_Zq8Lx2vN0bYkRrT5uWc3pAeFgHiJkLmN"


@pytest.mark.parametrize("echo", [
    f"Authorization header was 'Bearer {TGP_KEY}'",
    f"key {HEX_KEY} is not valid",
    f"api_key={TGP_KEY}",
])
def test_it_redacts_keys_echoed_in_an_error_body(echo):
    error = classify_error(401, as_bytes(standard(echo)))
    assert TGP_KEY not in error.message and HEX_KEY not in error.message
    assert "[redacted]" in error.message
    assert TGP_KEY not in repr(error) and HEX_KEY not in repr(error)


def test_it_redacts_a_caller_supplied_secret_of_any_shape():
    error = classify_error(400, standard("you sent mysecret-1234 as key"), secrets=["mysecret-1234"])
    assert "mysecret-1234" not in error.message


def test_it_redacts_secrets_in_exception_text():
    error = classify_error(None, None, exc=httpx.ConnectError(f"failed for Bearer {TGP_KEY}"))
    assert TGP_KEY not in error.message


def test_it_truncates_a_huge_message():
    error = classify_error(400, standard("x" * 100_000))
    assert len(error.message) == MESSAGE_LIMIT


@pytest.mark.parametrize(
    "status", [None, 200, 302, 400, 401, 402, 403, 404, 418, 429, 500, 503, 599, 999, -1]
)
def test_it_never_raises_on_random_bodies(status):
    rng = random.Random(status or 0)
    bodies: list[object] = [
        None, b"", "", b"null", b"[]", b"{}", b'"just a string"', b"42", b"{\"error\": null}",
        b'{"error": {"message": {"nested": [1, 2]}}}', b'{"error": {"message": null, "type": 5}}',
        b'{"error": [1, 2, 3]}', b"[" * 100_000, b"<" * 50_000, b"<script>" * 5_000, {"error": {"param": {}}},
        [{"error": "x"}], {1: 2}, {"message": 12}, bytearray(b"{}"), memoryview(b'{"error": "mv"}'),
    ]
    bodies += [bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 300))) for _ in range(50)]
    bodies += [json.dumps(random_json(rng, 4)) for _ in range(50)]
    for body in bodies:
        error = classify_error(status, body, {"retry-after": "soon", "x-ratelimit-reset": "nan"})  # type: ignore[arg-type]
        assert error.kind in TAXONOMY
        assert isinstance(error.message, str) and len(error.message) <= MESSAGE_LIMIT


def test_it_survives_a_broken_headers_mapping():
    class Exploding(dict):
        def items(self):
            raise RuntimeError("boom")

    error = classify_error(429, b"", Exploding(a="b"))
    assert error.kind == "rate_limited"


def random_json(rng: random.Random, depth: int) -> object:
    choice = rng.randint(0, 6 if depth else 3)
    if choice == 0:
        return rng.random()
    if choice == 1:
        return "".join(chr(rng.randint(0, 0x2FF)) for _ in range(rng.randint(0, 20)))
    if choice == 2:
        return None
    if choice == 3:
        return rng.choice([True, False, rng.randint(-10, 10**12)])
    if choice == 4:
        return [random_json(rng, depth - 1) for _ in range(rng.randint(0, 4))]
    keys = ["error", "message", "type", "code", "param", "id", "detail", "x"]
    return {rng.choice(keys): random_json(rng, depth - 1) for _ in range(rng.randint(0, 4))}
