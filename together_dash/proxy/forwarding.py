"""Shape what crosses the proxy: headers both ways, the upstream URL, the request body, our own errors."""
from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

Headers = list[tuple[bytes, bytes]]

# RFC 9110 §7.6.1: meaningful for one connection only, never forwarded.
HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"proxy-authenticate", b"proxy-authorization",
    b"te", b"trailer", b"transfer-encoding", b"upgrade",
})
# Replaced by the proxy on the way up: Host comes from the upstream URL, Authorization is the upstream
# key, Content-Length is recomputed from the body sent, X-Forwarded-For gets the client appended,
# and Expect was already answered by our own server.
_REPLACED_UP = frozenset({b"host", b"authorization", b"content-length", b"x-forwarded-for", b"expect"})
# Our ASGI server writes its own Date and Server; forwarding upstream's too would duplicate them.
_REPLACED_DOWN = frozenset({b"date", b"server"})
# The proxy reads bodies to count tokens, so it only lets upstream use encodings it can decode.
_DECODABLE = frozenset({"gzip", "deflate", "identity"})
JSON_TYPE = b"application/json"
MAX_ERROR_BODY = 64 * 1024


@dataclass(slots=True)
class RequestFacts:
    """What the proxy needs to know about a JSON request body."""

    model: str = ""
    stream: bool = False
    wants_usage: bool = False
    is_json_object: bool = False


def connection_tokens(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """Header names listed in Connection, which are hop-by-hop for this message only."""
    names: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            names.update(token.strip().lower() for token in value.split(b","))
    return frozenset(names)


def upstream_request_headers(
    headers: Headers, secret: str, client_host: str | None, *, identity_only: bool = False,
    keep_length: bool = False,
) -> Headers:
    """The client's headers as sent upstream: hop-by-hop dropped, auth swapped, forwarding noted.

    keep_length: the body goes up as it arrives, so the client's Content-Length still holds.
    """
    skip = HOP_BY_HOP | _REPLACED_UP | connection_tokens(headers)
    if keep_length:
        skip = skip - {b"content-length"}
    forwarded_for = b""
    out: Headers = []
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"x-forwarded-for":
            forwarded_for = value
        elif lowered == b"accept-encoding":
            encoding = b"identity" if identity_only else decodable_encodings(value)
            if encoding:
                out.append((b"accept-encoding", encoding))
        elif lowered not in skip:
            out.append((lowered, value))
    out.append((b"authorization", b"Bearer " + secret.encode("latin-1")))
    chain = _forwarded_chain(forwarded_for, client_host)
    if chain:
        out.append((b"x-forwarded-for", chain))
    return out


def _forwarded_chain(forwarded_for: bytes, client_host: str | None) -> bytes:
    """X-Forwarded-For with the client appended, unless the server already took the client from it."""
    if not client_host:
        return forwarded_for
    host = client_host.encode()
    if not forwarded_for:
        return host
    # uvicorn (proxy_headers) reports the last hop of a trusted X-Forwarded-For as the client.
    if forwarded_for.rsplit(b",", 1)[-1].strip() == host:
        return forwarded_for
    return forwarded_for + b", " + host


def decodable_encodings(accept_encoding: bytes) -> bytes:
    """Keep only the codings the proxy can read, with their weights; empty when none is left."""
    kept = []
    for part in accept_encoding.decode("latin-1").split(","):
        coding = part.split(";", 1)[0].strip().lower()
        if coding in _DECODABLE:
            kept.append(part.strip())
    return ", ".join(kept).encode("latin-1")


def downstream_headers(raw: Iterable[tuple[bytes, bytes]], *, drop_length: bool = False) -> Headers:
    """Upstream response headers as sent to the client: unchanged but for hop-by-hop ones."""
    raw = list(raw)
    skip = HOP_BY_HOP | _REPLACED_DOWN | connection_tokens(raw)
    if drop_length:
        skip = skip | {b"content-length"}
    return [(name.lower(), value) for name, value in raw if name.lower() not in skip]


def header_value(headers: Headers, name: bytes) -> bytes | None:
    """The first value of a lower-case header name in ASGI headers."""
    for key, value in headers:
        if key == name:
            return value
    return None


def bearer_token(headers: Headers) -> str:
    """The presented API key from Authorization: Bearer, or ""."""
    value = header_value(headers, b"authorization")
    if not value:
        return ""
    scheme, _, token = value.decode("latin-1").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


# Together versions each resource in its path (/v1/chat/completions, /v2/supported-models, /v3/whoami):
# the proxy serves every version it uses, at the root, as Together does.
API_VERSIONS = ("v1", "v2", "v3")
_VERSIONED = re.compile(r"^/v[123](?:/|$)")
_REPEATED_VERSION = re.compile(r"^/v[0-9]+/v[0-9]+(?:/|$)")
_DOT_SEGMENT = re.compile(r"(?:^|/)\.{1,2}(?:/|$)")


def is_proxy_path(path: str) -> bool:
    """A path under one of Together's API versions (/v1, /v2, /v3), which the proxy serves."""
    return _VERSIONED.match(path) is not None


def upstream_root(base_url: str) -> str:
    """The upstream's root URL: TOGETHER_BASE_URL (.../v1 by convention) without its version."""
    base = base_url.rstrip("/")
    return base[: -len("/v1")] if base.endswith("/v1") else base


def upstream_url(root_url: str, scope: dict) -> str:
    """The upstream URL of a request: the client's raw path (version included) and query on the root."""
    raw_path = scope.get("raw_path")
    path = raw_path.decode("latin-1") if raw_path else scope["path"]
    query = scope.get("query_string", b"")
    url = root_url + path
    return f"{url}?{query.decode('latin-1')}" if query else url


def path_problem(scope: dict) -> tuple[int, str, str] | None:
    """Why the proxy must not forward this path (status, message, code), or None.

    Dot segments, decoded or not ("/v1/../admin/", "/v1/%2e%2e/", "/v1/..%2f"), would let an app key
    reach paths outside the API with the organisation's key attached; a repeated version prefix is a
    client configured with the wrong base URL for its SDK.
    """
    raw = scope.get("raw_path") or scope["path"].encode("latin-1", "replace")
    decoded = raw.decode("latin-1").replace("%2e", ".").replace("%2E", ".")
    decoded = decoded.replace("%2f", "/").replace("%2F", "/").replace("%5c", "/").replace("%5C", "/")
    for candidate in (scope["path"], decoded.replace("\\", "/")):
        if _DOT_SEGMENT.search(candidate):
            return 400, "The path may not contain '.' or '..' segments.", "invalid_path"
    if _REPEATED_VERSION.match(scope["path"]):
        return 404, _REPEATED_MESSAGE.format(path=scope["path"][:200]), "not_found"
    return None


_REPEATED_MESSAGE = (
    "Unknown endpoint {path}: the path repeats its version prefix, so the client's base URL is wrong for "
    "its SDK. together 3.x takes the dashboard's root (base_url=\"http://HOST:8000\"); together 2.x and "
    "the OpenAI SDK take it with /v1 (base_url=\"http://HOST:8000/v1\")."
)


def is_json(content_type: bytes | None) -> bool:
    return content_type is not None and content_type.split(b";", 1)[0].strip().lower() == JSON_TYPE


def read_request_facts(body: bytes) -> tuple[RequestFacts, dict | None]:
    """Model, stream flag and usage wish from a JSON body; the parsed object when it is one."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return RequestFacts(), None
    if not isinstance(data, dict):
        return RequestFacts(), None
    options = data.get("stream_options")
    facts = RequestFacts(
        model=data["model"] if isinstance(data.get("model"), str) else "",
        stream=data.get("stream") is True,
        wants_usage=isinstance(options, dict) and options.get("include_usage") is True,
        is_json_object=True,
    )
    return facts, data


_LEADING_BRACE = re.compile(rb"^\s*\{\s*")


def with_stream_usage(body: bytes, data: dict) -> bytes:
    """The same request, asking upstream to report usage at the end of the stream."""
    if "stream_options" not in data:
        # Splice the option in so the rest of the client's bytes go upstream untouched.
        match = _LEADING_BRACE.match(body)
        if match is not None:
            rest = body[match.end():]
            separator = b"," if not rest.lstrip().startswith(b"}") else b""
            return b'{"stream_options":{"include_usage":true}' + separator + rest
    options = data.get("stream_options")
    options = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    data = {**data, "stream_options": options}
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


# ft-<uuid>, file-<uuid>, bare uuids and other long tokens with digits are ids, not endpoints.
_ID_SEGMENT = re.compile(r"^(ft|file|batch)-.+|^[0-9a-f-]{16,}$|^(?=.*\d).{12,}$", re.I)
_KEEP_SEGMENTS = frozenset({
    *API_VERSIONS, "chat", "completions", "embeddings", "models", "files", "fine-tunes", "batches",
    "supported-models", "projects", "endpoints", "hardware", "whoami", "billing", "usage", "rerank",
})


@lru_cache(maxsize=1024)
def endpoint_name(path: str) -> str:
    """The path with ids replaced by {id}, so logs group by endpoint, not by job or file."""
    segments = path.split("/")
    for index, segment in enumerate(segments[2:], start=2):
        # A project id may be any slug (/v2/projects/{id}/models): the segment after "projects" is one.
        named_id = segments[index - 1] == "projects"
        if segment not in _KEEP_SEGMENTS and (named_id or _ID_SEGMENT.match(segment)):
            segments[index] = "{id}"
    return "/".join(segments)[:200]


def error_body(message: str, error_type: str, code: str | None, param: str | None = None) -> bytes:
    """Together's standard error body."""
    error = {"message": message, "type": error_type, "param": param, "code": code}
    return json.dumps({"error": error}, separators=(",", ":")).encode()
