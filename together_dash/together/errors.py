"""Classify any Together API failure into the taxonomy of DESIGN.md: category, kind, cause, fix, retry."""
from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from http import HTTPStatus
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import httpx

from together_dash.together.ratelimits import parse_ratelimit_headers
from together_dash.together.redact import redact

CATEGORIES: tuple[str, ...] = (
    "auth",
    "billing",
    "rate_limit",
    "validation",
    "not_found",
    "server",
    "network",
)

MESSAGE_LIMIT = 1000
# Bodies are cut before redaction so a multi-megabyte HTML page cannot make classification slow;
# the cut is far past MESSAGE_LIMIT, so a secret split by it is dropped by the final truncation.
_SCAN_LIMIT = 20_000
_HTML_LIMIT = 300
_FIELD_LIMIT = 200


class KindInfo(NamedTuple):
    """What the dashboard shows for one kind: its category, whether to retry, the cause and the fix."""

    category: str
    retryable: bool
    cause: str
    fix: str


_RATE_FIX = (
    "Back off until x-ratelimit-reset has passed, smooth bursts into steady traffic, "
    "and move bulk work to the batch API."
)

TAXONOMY: dict[str, KindInfo] = {
    "invalid_api_key": KindInfo(
        "auth", False,
        "The API key is invalid, revoked or missing.",
        "Verify the key, or rotate it: create a new one at https://api.together.xyz/settings/api-keys "
        "and replace it here.",
    ),
    # Never the classifier's answer: the proxy's own 401 for the app key a client sent (proxy/exchange.py).
    "app_key_rejected": KindInfo(
        "auth", False,
        "The proxy refused the request before it reached Together: the app key was missing, unknown, "
        "revoked or expired, or has no usable upstream key. The Together key is not at fault.",
        "Give the client a valid app key (Keys page, or manage.py create_app_key NAME); the message says "
        "which key was refused and why.",
    ),
    "permission_denied": KindInfo(
        "auth", False,
        "This key may not use the model: it is gated by account tier or organisation.",
        "Request access (or raise the account tier), or switch to a model the key can use.",
    ),
    "insufficient_credits": KindInfo(
        "billing", False,
        "The account balance or spend limit is used up; Together suspends API access at zero balance.",
        "Add credits at https://api.together.ai/settings/billing; resume from the last successful request.",
    ),
    "request_rate_limited": KindInfo(
        "rate_limit", True, "Over the dynamic request rate Together allows this key and model.", _RATE_FIX,
    ),
    "token_rate_limited": KindInfo(
        "rate_limit", True, "Over the dynamic token rate Together allows this key and model.", _RATE_FIX,
    ),
    "rate_limited": KindInfo(
        "rate_limit", True, "Over the rate limit for this key or model.", _RATE_FIX,
    ),
    "token_limit_exceeded": KindInfo(
        "validation", False,
        "Input tokens plus max_tokens exceed the model's context length.",
        "Shorten the input, lower max_tokens, or switch to a model with a larger context length.",
    ),
    "model_not_found": KindInfo(
        "validation", False,
        "The model id is wrong, deprecated or not visible to this key.",
        "Pick a model from the polled catalog; use its successor if one is listed.",
    ),
    "model_not_available": KindInfo(
        "validation", False,
        "The model is not serverless: it needs a dedicated endpoint, which is not running.",
        "Start the dedicated endpoint at https://api.together.ai/models, or switch to a serverless model.",
    ),
    "invalid_finetune_dataset": KindInfo(
        "validation", False,
        "The fine-tune dataset failed Together's checks (JSONL format errors).",
        "Validate every line (manage.py validate_dataset), fix the reported lines and re-upload the file.",
    ),
    "invalid_request": KindInfo(
        "validation", False,
        "Together rejected the request as invalid.",
        "Together's message says what is wrong; fix the request, retrying it unchanged will fail again.",
    ),
    "finetune_job_not_found": KindInfo(
        "not_found", False,
        "The fine-tune job id is wrong or has expired.",
        "List the active jobs (GET /fine-tunes) and use an id from there.",
    ),
    "endpoint_not_found": KindInfo(
        "not_found", False,
        "The URL does not exist on the Together API.",
        "Check the base URL (it ends in /v1) and the path of the request.",
    ),
    "model_overloaded": KindInfo(
        "server", True,
        "Together failed internally, usually because of high demand for the model.",
        "Retry with backoff, or use an alternative model of the same family.",
    ),
    "service_unavailable": KindInfo(
        "server", True,
        "Together is short of capacity (the engine is overloaded or not ready); this is not your rate.",
        "Retry later with backoff, or use another model.",
    ),
    "upstream_timeout": KindInfo(
        "server", True,
        "A Together gateway timed out or got a bad answer from the model server.",
        "Retry; if it keeps happening, shorten the request or lower max_tokens.",
    ),
    "timeout": KindInfo(
        "network", True,
        "No answer from Together within the client timeout.",
        "Retry; check connectivity (manage.py check_connectivity) and the timeout settings.",
    ),
    "connection_error": KindInfo(
        "network", True,
        "Could not reach Together, or the connection was reset mid-request.",
        "Retry; check DNS, proxy and firewall with manage.py check_connectivity.",
    ),
    "bad_response": KindInfo(
        "network", True,
        "Together (or a proxy in between) answered with a body that is not the expected JSON.",
        "Retry; if it persists, check the base URL and look for an intercepting proxy.",
    ),
}

KINDS: tuple[str, ...] = tuple(TAXONOMY)


@dataclass(frozen=True, slots=True)
class ClassifiedError:
    """One Together failure, classified: what happened, whether to retry, and what to tell on-call."""

    category: str
    kind: str
    retryable: bool
    cause: str
    fix: str
    message: str
    status: int | None = None
    retry_after: float | None = None
    error_type: str | None = None
    error_code: str | None = None
    param: str | None = None
    request_id: str | None = None

    @property
    def pauses_traffic(self) -> bool:
        """True when sending more requests cannot help until a human acts (402: add credits)."""
        return self.category == "billing"

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON, logs and storage."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class _Body:
    """What we could read out of an error body."""

    message: str = ""
    error_type: str | None = None
    error_code: str | None = None
    param: str | None = None
    body_id: str | None = None


def classify_error(
    status: int | None,
    body: bytes | str | dict | list | None,
    headers: Mapping[str, str] | None = None,
    path: str = "",
    exc: BaseException | None = None,
    *,
    method: str | None = None,
    secrets: Sequence[str] = (),
) -> ClassifiedError:
    """Classify a failed call from whatever is known about it; never raises."""
    try:
        return _classify(status, body, headers, path, exc, method, tuple(secrets))
    except Exception:  # the classifier runs inside error handlers: it must not add a second failure
        return _classify_status_only(status, path, method)


def _classify_status_only(status: int | None, path: str, method: str | None) -> ClassifiedError:
    """Fallback when the body or headers broke the classifier: the status alone still means something."""
    try:
        return _classify(status, None, None, path, None, method, ())
    except Exception:
        return _build("bad_response", status, _Body(message=_status_text(status)))


def classify_bad_response(
    status: int | None,
    body: bytes | str | dict | list | None,
    headers: Mapping[str, str] | None = None,
    *,
    secrets: Sequence[str] = (),
) -> ClassifiedError:
    """Classify a response whose body was not the JSON the caller expected, whatever its status."""
    try:
        parsed = _read_body(body, tuple(secrets))
        return _build("bad_response", status, parsed, headers=headers)
    except Exception:  # same contract as classify_error
        return _build("bad_response", status, _Body(message=_status_text(status)))


def _classify(
    status: int | None,
    body: bytes | str | dict | list | None,
    headers: Mapping[str, str] | None,
    path: str,
    exc: BaseException | None,
    method: str | None,
    secrets: tuple[str, ...],
) -> ClassifiedError:
    transport_kind = _kind_for_exception(exc)
    if transport_kind is not None and (status is None or transport_kind != "bad_response" or status < 400):
        return _build(transport_kind, status, _exception_body(exc, body, secrets), headers=headers)
    parsed = _read_body(body, secrets)
    if status is None:
        return _build("connection_error", None, parsed, headers=headers)
    method, path = _split_method(method, path)
    kind = _kind_for_status(status, parsed, method, _api_path(path))
    return _build(kind, status, parsed, headers=headers)


# ---- transport exceptions ----------------------------------------------------------------------------

def _kind_for_exception(exc: BaseException | None) -> str | None:
    """Map a transport or decoding exception to a network kind; None when there was no exception."""
    if exc is None:
        return None
    # TimeoutError subclasses OSError and asyncio.TimeoutError is TimeoutError, so test timeouts first.
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return "timeout"
    if isinstance(exc, httpx.DecodingError | httpx.TooManyRedirects | ValueError | TypeError | KeyError):
        return "bad_response"
    return "connection_error"


def _exception_body(exc: BaseException | None, body: Any, secrets: tuple[str, ...]) -> _Body:
    parsed = _read_body(body, secrets)
    if parsed.message:
        return parsed
    detail = str(exc) if exc is not None else ""
    text = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    return _Body(message=_clean_message(text, secrets))


# ---- status codes ------------------------------------------------------------------------------------

_CONTEXT_WORDS = re.compile(
    r"context[ _-]?(length|window|size)|max_(new_)?tokens|token[ _-]?(count|limit)|\btokens\b", re.I
)
_TOKEN_LIMIT = re.compile(
    r"tokens`?\s*\+\s*`?max_(new_)?tokens`?\s*must be|token limit exceeded|"
    r"must be less than the context length|context_length_exceeded",
    re.I,
)
_MODEL_NOT_FOUND = re.compile(r"unable to access model|model not found", re.I)
_MODEL_NOT_AVAILABLE = re.compile(r"non-serverless|dedicated endpoint .* is not running", re.I)
_TIER_GATED = re.compile(r"allowed for build tier", re.I)
_FINETUNE_JOB = re.compile(r"^/fine-tunes/[^/]+(/.*)?$")
_FILE_CHECK = re.compile(r"^/files(/upload|/multipart/.*|/[^/]+/preprocess)?$")
_VALIDATION_STATUSES = frozenset({400, 405, 406, 409, 411, 412, 413, 414, 415, 416, 422, 428, 431})
_GATEWAY_STATUSES = frozenset({502, 504, 520, 521, 522, 523, 524})


def _kind_for_status(status: int, body: _Body, method: str | None, path: str) -> str:
    if status < 400:
        return "bad_response"  # a success or redirect reached the classifier: its body was not usable
    simple = {401: "invalid_api_key", 402: "insufficient_credits", 408: "timeout", 410: "endpoint_not_found"}
    if status in simple:
        return simple[status]
    if status == 403:
        return _kind_for_403(body)
    if status == 404:
        return _model_kind(body) or _kind_for_404(path)
    if status == 429:
        return _kind_for_429(body)
    if status >= 500:
        return _kind_for_5xx(status)
    if status in _VALIDATION_STATUSES:
        return _kind_for_validation(body, method, path)
    return "invalid_request"


def _kind_for_403(body: _Body) -> str:
    # DOC-ERR documents context overflow as 403; everything else on 403 is an access problem.
    if body.param == "max_tokens" or _CONTEXT_WORDS.search(body.message):
        return "token_limit_exceeded"
    return "permission_denied"


def _kind_for_404(path: str) -> str:
    if _FINETUNE_JOB.match(path):
        return "finetune_job_not_found"
    return "endpoint_not_found"


def _kind_for_429(body: _Body) -> str:
    # Status wins over type: the 2024 rate-limit body said type "credit_limit" but it was a 429.
    limiter = (body.error_type or "").lower()
    if limiter == "dynamic_request_limited":
        return "request_rate_limited"
    if limiter == "dynamic_token_limited":
        return "token_rate_limited"
    return "rate_limited"


def _kind_for_5xx(status: int) -> str:
    if status in _GATEWAY_STATUSES:
        return "upstream_timeout"
    if status in (503, 529):
        return "service_unavailable"
    return "model_overloaded"


def _kind_for_validation(body: _Body, method: str | None, path: str) -> str:
    if _is_token_limit(body):
        return "token_limit_exceeded"
    model_kind = _model_kind(body)
    if model_kind:
        return model_kind
    if _TIER_GATED.search(body.message):
        return "permission_denied"
    if _is_dataset_failure(body, method, path):
        return "invalid_finetune_dataset"
    return "invalid_request"


def _is_token_limit(body: _Body) -> bool:
    return body.param == "max_tokens" or bool(_TOKEN_LIMIT.search(body.message))


def _model_kind(body: _Body) -> str | None:
    """model_not_available / model_not_found from the code, else from Together's wording."""
    code = (body.error_code or "").lower()
    if code in ("model_not_available", "dedicated_endpoint_not_running"):
        return "model_not_available"
    if code == "model_not_found":
        return "model_not_found"
    # "Unable to access non-serverless model" must be tested before "Unable to access model".
    if _MODEL_NOT_AVAILABLE.search(body.message):
        return "model_not_available"
    if _MODEL_NOT_FOUND.search(body.message):
        return "model_not_found"
    return None


def _is_dataset_failure(body: _Body, method: str | None, path: str) -> bool:
    if (body.error_type or "").upper() == "INVALID_FORMAT":
        return True
    if method not in (None, "POST"):
        return False
    return path == "/fine-tunes" or bool(_FILE_CHECK.match(path))


# ---- paths -------------------------------------------------------------------------------------------

def _split_method(method: str | None, path: str) -> tuple[str | None, str]:
    """Accept "POST /v1/fine-tunes" as well as a bare path or URL."""
    head, _, rest = (path or "").strip().partition(" ")
    if rest and head.isalpha() and head.isupper():
        return (method or head).upper(), rest.strip()
    return (method.upper() if method else None), (path or "").strip()


def _api_path(path: str) -> str:
    """The path relative to /v1, without query string or trailing slash."""
    bare = urlsplit(path).path if "://" in path else path.split("?", 1)[0]
    bare = "/" + bare.strip("/")
    if bare == "/v1" or bare.startswith("/v1/"):
        bare = bare[3:] or "/"
    return bare


# ---- bodies ------------------------------------------------------------------------------------------

def _read_body(body: bytes | str | dict | list | None, secrets: tuple[str, ...]) -> _Body:
    """Read the standard, batch, top-level-message, plain-text and HTML error shapes."""
    value = _decode(body)
    if isinstance(value, dict):
        return _clean_body(_from_mapping(value), secrets)
    if isinstance(value, str):
        return _Body(message=_clean_message(_text_message(value), secrets))
    if value is None:
        return _Body()
    return _Body(message=_clean_message(_compact_json(value), secrets))


def _decode(body: bytes | str | dict | list | None) -> Any:
    if isinstance(body, bytes | bytearray | memoryview):
        body = bytes(body[:_SCAN_LIMIT]).decode("utf-8", errors="replace")
    if not isinstance(body, str):
        return body
    text = body.strip()
    if text[:1] in ("{", "[", '"'):
        try:
            return json.loads(text)
        except (ValueError, RecursionError):
            return text  # a truncated or broken JSON body is still worth showing as text
    return text or None


def _from_mapping(data: dict) -> _Body:
    error = data.get("error")
    body_id = _short(data.get("id"))
    if isinstance(error, dict):
        return _body_from_error_object(error, body_id)
    if isinstance(error, str):  # batch endpoints: {"error": "..."}
        return _Body(message=error, body_id=body_id)
    if "message" in data or "detail" in data:
        return _body_from_error_object({**data, "message": data.get("message", data.get("detail"))}, body_id)
    return _Body(message=_compact_json(data), body_id=body_id)


def _body_from_error_object(error: dict, body_id: str | None) -> _Body:
    message = error.get("message")
    return _Body(
        message=message if isinstance(message, str) else _compact_json(message if message else error),
        error_type=_short(error.get("type")),
        error_code=_short(error.get("code")),
        param=_short(error.get("param")),
        body_id=body_id,
    )


def _clean_body(body: _Body, secrets: tuple[str, ...]) -> _Body:
    return _Body(
        message=_clean_message(body.message, secrets),
        error_type=_clean_field(body.error_type, secrets),
        error_code=_clean_field(body.error_code, secrets),
        param=_clean_field(body.param, secrets),
        body_id=_clean_field(body.body_id, secrets),
    )


_HTML_HINT = re.compile(r"<\s*(!doctype|html|head|body|title|h1|p|div|center|pre)\b", re.I)
_HTML_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.I | re.S)
_HTML_HIDDEN = re.compile(r"<(script|style)\b[^>]*>.*?</\1\s*>", re.I | re.S)
_HTML_TAG = re.compile(r"<[^>]*>")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_SPACES = re.compile(r"\s+")


def _text_message(text: str) -> str:
    """Plain text as is; an HTML page (a proxy's error page) reduced to its title or its visible text."""
    if not _HTML_HINT.search(text[:_SCAN_LIMIT]):
        return text
    page = text[: _SCAN_LIMIT // 2]
    title = _HTML_TITLE.search(page)
    if title and title.group(1).strip():
        visible = title.group(1)
    else:
        visible = _HTML_TAG.sub(" ", _HTML_HIDDEN.sub(" ", page))
    return _SPACES.sub(" ", html.unescape(visible)).strip()[:_HTML_LIMIT]


def _clean_message(text: str, secrets: tuple[str, ...]) -> str:
    """Redact secrets, drop control characters and cut to MESSAGE_LIMIT."""
    text = _CONTROL.sub(" ", text[:_SCAN_LIMIT])
    return redact(text, secrets).strip()[:MESSAGE_LIMIT]


def _clean_field(value: str | None, secrets: tuple[str, ...]) -> str | None:
    if value is None:
        return None
    return redact(_CONTROL.sub(" ", value), secrets)[:_FIELD_LIMIT]


def _short(value: Any) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    return str(value)[:_SCAN_LIMIT]


def _compact_json(value: Any) -> str:
    try:
        return json.dumps(value, separators=(",", ":"), default=str)[:_SCAN_LIMIT]
    except (TypeError, ValueError, RecursionError):
        return str(type(value).__name__)


# ---- result ------------------------------------------------------------------------------------------

def _build(
    kind: str, status: int | None, body: _Body, headers: Mapping[str, str] | None = None
) -> ClassifiedError:
    info = TAXONOMY[kind]
    return ClassifiedError(
        category=info.category,
        kind=kind,
        retryable=info.retryable,
        cause=info.cause,
        fix=info.fix,
        message=body.message or _status_text(status),
        status=status,
        retry_after=_retry_after(status, headers),
        error_type=body.error_type,
        error_code=body.error_code,
        param=body.param,
        request_id=_request_id(headers) or body.body_id,
    )


def _retry_after(status: int | None, headers: Mapping[str, str] | None) -> float | None:
    """The server's wait hint, which Together only means on a 429 or a 5xx."""
    if status is None or not headers or not (status == 429 or status >= 500):
        return None
    return parse_ratelimit_headers(headers).retry_after_seconds()


def _request_id(headers: Mapping[str, str] | None) -> str | None:
    if not headers:
        return None
    lowered = {str(key).lower(): str(value) for key, value in headers.items()}
    value = lowered.get("x-request-id") or lowered.get("cf-ray")
    return value[:_FIELD_LIMIT] if value else None


def _status_text(status: int | None) -> str:
    if status is None:
        return "No response from Together."
    try:
        return f"HTTP {status} {HTTPStatus(status).phrase} with no error message."
    except ValueError:
        return f"HTTP {status} with no error message."
