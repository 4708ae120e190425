"""Together's error bodies, verbatim where a real capture exists (reference §3.3), in one place.

Three shapes exist: the standard `{"error": {message, type, param, code}}` (optionally with a top-level
request `id`, as real bodies sometimes have), the batch `{"error": "string"}`, and non-JSON (HTML).
"""

from __future__ import annotations

import json

INVALID_API_KEY = (
    "Invalid API key provided. You can find your API key at https://api.together.xyz/settings/api-keys."
)
CREDIT_LIMIT = (
    "Credit limit exceeded. Please navigate to https://api.together.xyz/settings/billing "
    "to add credit or upgrade your plan."
)
# DOC-ERR's wording for its 403 (context overflow); the real 400 wording is in context_overflow().
CONTEXT_403 = (
    "Input token count + max_tokens parameter must be less than the context length of the model being "
    "queried."
)
OVERLOADED = "The server is overloaded or not ready yet."

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def body(
    message: str,
    type_: str,
    *,
    param: str | None = None,
    code: str | None = None,
    request_id: str | None = None,
) -> bytes:
    """A standard error body as bytes."""
    data: dict[str, object] = {}
    if request_id:
        data["id"] = request_id
    data["error"] = {"message": message, "type": type_, "param": param, "code": code}
    return _dumps(data).encode()


def batch_body(message: str) -> bytes:
    """The batch endpoints' own error shape: the error is a bare string."""
    return _dumps({"error": message}).encode()


def invalid_api_key() -> bytes:
    return body(INVALID_API_KEY, "invalid_request_error", code="invalid_api_key")


def credit_limit(request_id: str | None = None) -> bytes:
    return body(CREDIT_LIMIT, "credit_limit", request_id=request_id)


def model_not_found(model: str, request_id: str | None = None) -> bytes:
    message = (
        f"Unable to access model {model}. Please visit https://api.together.xyz to see the list of supported "
        "models or contact the owner to request access."
    )
    return body(message, "invalid_request_error", code="model_not_found", request_id=request_id)


def model_not_available(model: str, request_id: str | None = None) -> bytes:
    message = (
        f"Unable to access non-serverless model {model}. Please visit https://api.together.ai/models/{model} "
        "to create and start a new dedicated endpoint for the model."
    )
    return body(message, "invalid_request_error", code="model_not_available", request_id=request_id)


def context_overflow(
    context_length: int, input_tokens: int, max_new_tokens: int, request_id: str | None = None
) -> bytes:
    message = (
        f"Input validation error: `inputs` tokens + `max_new_tokens` must be <= {context_length}. "
        f"Given: {input_tokens} `inputs` tokens and {max_new_tokens} `max_new_tokens`"
    )
    return body(message, "invalid_request_error", param="max_tokens", request_id=request_id)


def invalid_request(message: str, param: str | None = None, request_id: str | None = None) -> bytes:
    return body(message, "invalid_request_error", param=param, request_id=request_id)


def rate_limited(kind: str, limit: int, window_s: float, request_id: str | None = None) -> bytes:
    """429 body; the type carries the limiter kind (DOC-RL). The exact message is not published."""
    what = "requests" if kind == "dynamic_request_limited" else "tokens"
    message = (
        f"You have been rate limited: over your limit of {limit} {what} per {window_s:g}s. "
        "Please retry after the time given in the x-ratelimit-reset header."
    )
    return body(message, kind, request_id=request_id)


def not_found(message: str) -> bytes:
    return body(message, "invalid_request_error", code="not_found")


def server_error(status: int) -> bytes:
    messages = {
        500: ("Internal server error", "server_error"),
        502: ("Bad gateway", "server_error"),
        503: (OVERLOADED, "server_error"),
        504: ("Gateway timeout: the model did not respond in time.", "server_error"),
    }
    message, type_ = messages.get(status, ("Internal server error", "server_error"))
    return body(message, type_)


HTML_502 = b"""<html>
<head><title>502 Bad Gateway</title></head>
<body>
<center><h1>502 Bad Gateway</h1></center>
<hr><center>cloudflare</center>
</body>
</html>
"""


def permission_denied(message: str) -> bytes:
    """403 for a resource of another project or organisation."""
    return body(message, "permission_denied", code="forbidden")
