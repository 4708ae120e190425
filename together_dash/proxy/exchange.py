"""One request through the proxy: authenticate, check policy, forward, relay, log."""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx

from together_dash.budgets.models import format_usd
from together_dash.proxy import metrics
from together_dash.proxy.auth import APP_KEY_REJECTED, Credential, Refusal, no_key
from together_dash.proxy.capture import BodyCapture, BodySummary, Usage, make_decoder
from together_dash.proxy.forwarding import (
    MAX_ERROR_BODY,
    RequestFacts,
    bearer_token,
    downstream_headers,
    endpoint_name,
    error_body,
    header_value,
    is_json,
    path_problem,
    read_request_facts,
    upstream_request_headers,
    with_stream_usage,
)
from together_dash.proxy.sse import SseWatcher
from together_dash.proxy.upstream import UpstreamClosed
from together_dash.together.errors import classify_bad_response, classify_error
from together_dash.together.ratelimits import parse_ratelimit_headers
from together_dash.together.redact import redact
from together_dash.traffic.entries import LogEntry

if TYPE_CHECKING:
    from together_dash.proxy.auth import CredentialCache
    from together_dash.proxy.budgets import BudgetGuard, OverBudget
    from together_dash.proxy.buffer import LogBuffer
    from together_dash.proxy.limits import MinuteLimiter

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]

CLIENT_CLOSED_REQUEST = 499  # nginx's status for "the client hung up first"
_RATE_LIMIT_PREFIXES = (b"x-ratelimit-", b"x-tokenlimit-", b"retry-after")
_JSON_HEADERS = [(b"content-type", b"application/json")]


class ClientGone(Exception):
    """The client disconnected before the exchange finished."""


class UpstreamBroke(Exception):
    """Upstream failed after the response had started; the client connection is cut to show it."""


@dataclass(frozen=True, slots=True)
class Collaborators:
    """What every exchange of one proxy shares, built by Proxy.start(): keys, limits, upstream, logs."""

    credentials: CredentialCache
    limiter: MinuteLimiter
    upstream_url: Callable[[dict[str, Any]], httpx.URL]
    transport: httpx.AsyncBaseTransport
    timeouts: dict[str, float | None]
    logs: LogBuffer
    body_sample_rate: float
    body_sample_max_bytes: int
    max_body_bytes: int
    sample: Callable[[], float]  # a uniform draw in [0, 1), for body sampling
    budgets: BudgetGuard | None = None  # enforced app-key budgets (None: not enforced)
    trace_context: bool = False  # keep the caller's traceparent for the OpenTelemetry span
    capture_content: bool = False  # OTEL_CAPTURE_CONTENT: keep every body for the span (not stored)


class Exchange:
    """State of one proxied request, from the first byte received to the LogEntry."""

    def __init__(self, shared: Collaborators, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        self.shared = shared
        self.scope = scope
        self.receive = receive
        self.send = send
        self.started = time.perf_counter()
        self.headers: list[tuple[bytes, bytes]] = scope["headers"]
        self.json_request = is_json(header_value(self.headers, b"content-type"))
        self.entry = LogEntry(
            created_at=datetime.now(UTC),
            endpoint=endpoint_name(scope["path"]),
            method=scope["method"],
        )
        if shared.trace_context:
            self._keep_trace_context()
        self.endpoint_label = metrics.endpoint_label(self.entry.endpoint)
        self.credential: Credential | None = None
        self.facts = RequestFacts()
        self.asked_for_usage = False
        self.storing_sample = shared.body_sample_rate > 0 and shared.sample() < shared.body_sample_rate
        self.sampling = self.storing_sample or shared.capture_content
        self.client_gone = False
        self.finished = False
        self.upstream_status: int | None = None
        # What stopped a streamed upload on our side (the client left, or its body went over the
        # limit): the transport only sees its request fail, the exchange answers for the real cause.
        self.upload_error: Exception | None = None

    def _keep_trace_context(self) -> None:
        """The caller's W3C trace context, as sent (it is checked when the span is made, off this path)."""
        traceparent = header_value(self.headers, b"traceparent")
        if traceparent:
            self.entry.traceparent = traceparent.decode("latin-1")[:100]
            tracestate = header_value(self.headers, b"tracestate")
            self.entry.tracestate = tracestate.decode("latin-1")[:512] if tracestate else ""

    # ---- the whole exchange ------------------------------------------------------------------------

    async def run(self) -> None:
        watcher: asyncio.Task | None = None
        try:
            self._check_path()
            self.credential = await self._authenticate()
            body, more = await self._read_first_body()
            content = await self._prepare(body, more)
            self._check_policy()
            if not more:
                watcher = self._watch_for_disconnect()
            await self._forward(content, watcher)
        except Refusal as refusal:
            await self._refuse(refusal)
        except ClientGone:
            self._note_client_gone()
        except asyncio.CancelledError:
            if not self.client_gone:
                raise
            # Our own disconnect watcher cancelled us: the request is over, not the server.
            asyncio.current_task().uncancel()
            self._note_client_gone()
        finally:
            self.finished = True
            if watcher is not None:
                watcher.cancel()
            self._log()

    def _check_path(self) -> None:
        problem = path_problem(self.scope)
        if problem is not None:
            status, message, code = problem
            raise Refusal(message, status=status, code=code)

    async def _authenticate(self) -> Credential:
        presented = bearer_token(self.headers)
        if not presented:
            raise no_key()
        try:
            credential = await self.shared.credentials.get(presented)
        except Refusal as failure:
            self.entry.app_key_id = failure.app_key_id
            raise
        self.entry.app_key_id = credential.app_key_id
        self.entry.upstream_key_id = credential.upstream_key_id
        self.entry.key_fingerprint = credential.key_fingerprint
        return credential

    async def _read_first_body(self) -> tuple[bytes, bool]:
        """The request body when it is JSON or arrives whole; else its first part (streamed on)."""
        declared = header_value(self.headers, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.shared.max_body_bytes:
            raise self._too_large()
        chunks: list[bytes] = []
        self.body_bytes = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            self._count_body(chunk)
            chunks.append(chunk)
            more = message.get("more_body", False)
            if not more or not self.json_request:
                return b"".join(chunks), more

    def _count_body(self, chunk: bytes) -> None:
        """Stop reading at PROXY_MAX_BODY_BYTES, also when the client sent no Content-Length."""
        self.body_bytes += len(chunk)
        if self.body_bytes > self.shared.max_body_bytes:
            raise self._too_large()

    def _too_large(self) -> Refusal:
        limit = self.shared.max_body_bytes
        return Refusal(f"The request body is larger than the proxy's limit of {limit} bytes "
                       "(PROXY_MAX_BODY_BYTES).", status=413, code="request_too_large")

    async def _prepare(self, body: bytes, more: bool) -> bytes | AsyncIterator[bytes]:
        """What to send upstream: the body, with stream usage asked for when the client did not."""
        if more:
            return self._stream_rest(body)
        if body and self.json_request:
            self.facts, data = read_request_facts(body)
            self.entry.model_requested = self.facts.model[:200]
            self.entry.stream = self.facts.stream
            if data is not None and self.facts.stream and not self.facts.wants_usage:
                self.asked_for_usage = True
                body = with_stream_usage(body, data)
        if self.sampling:
            self._sample("request", body)
        return body

    async def _stream_rest(self, first: bytes) -> AsyncIterator[bytes]:
        """A large non-JSON body (a file upload) goes upstream as it arrives."""
        yield first
        more = True
        try:
            while more:
                message = await self.receive()
                if message["type"] == "http.disconnect":
                    raise ClientGone
                more = message.get("more_body", False)
                chunk = message.get("body", b"")
                self._count_body(chunk)
                yield chunk
        except (ClientGone, Refusal) as exc:
            self.upload_error = exc
            raise

    def _check_policy(self) -> None:
        credential = self.credential
        assert credential is not None
        model = self.facts.model
        if model and not credential.allows_model(model):
            allowed = ", ".join(sorted(credential.allowed_models))
            name = credential.app_key_name
            message = f"The app key {name!r} may not use model {model!r}; it may use: {allowed}."
            raise Refusal(message, status=403, code="model_not_allowed", param="model")
        # The budget first: a refused request must not use up the key's rate limit as well.
        if self.shared.budgets is not None and credential.app_key_id is not None:
            over = self.shared.budgets.check(credential.app_key_id)
            if over is not None:
                raise _over_budget(credential, over, self.entry.created_at)
        limit = credential.rate_limit_per_minute
        if limit and credential.app_key_id is not None:
            wait = self.shared.limiter.check(credential.app_key_id, limit)
            if wait is not None:
                raise _rate_limited(credential, limit, wait)

    # ---- upstream ----------------------------------------------------------------------------------

    async def _forward(self, content: bytes | AsyncIterator[bytes], watcher: asyncio.Task | None) -> None:
        credential = self.credential
        assert credential is not None
        client_host = self.scope.get("client")[0] if self.scope.get("client") else None
        headers = upstream_request_headers(
            self.headers, credential.upstream_secret, client_host,
            identity_only=self.asked_for_usage, keep_length=not isinstance(content, bytes),
        )
        url = self.shared.upstream_url(self.scope)
        request = httpx.Request(self.scope["method"], url, headers=headers, content=content,
                                extensions={"timeout": self.shared.timeouts})
        sent_at = time.perf_counter()
        try:
            # The transport itself, not AsyncClient.send: no redirects, auth or cookies to handle
            # here, and skipping that layer halves the proxy's CPU per request.
            response = await self.shared.transport.handle_async_request(request)
        except httpx.TransportError as exc:
            if self.upload_error is not None:
                raise self.upload_error from None
            await self._transport_failed(exc)
            return
        metrics.observe_upstream_latency(self.endpoint_label, time.perf_counter() - sent_at)
        try:
            if watcher is None:  # a streamed body is fully sent by now; receive() is free to watch
                watcher = self._watch_for_disconnect()
            await self._relay(response)
        finally:
            await response.aclose()
            if watcher is not None:
                watcher.cancel()

    async def _relay(self, response: httpx.Response) -> None:
        self.upstream_status = response.status_code
        head = self._read_response_head(response)
        content_type = head.get(b"content-type", b"").decode("latin-1").lower()
        encoding = head.get(b"content-encoding") or None
        if content_type.startswith("text/event-stream"):
            await self._relay_stream(response, encoding)
        else:
            json_body = content_type.startswith("application/json")
            await self._relay_body(response, encoding, json_body=json_body)

    async def _relay_stream(self, response: httpx.Response, encoding: bytes | None) -> None:
        watcher = SseWatcher(strip_usage_only=self.asked_for_usage, content_encoding=encoding)
        self.entry.stream = True
        await self._start_response(response, drop_length=self.asked_for_usage)
        sample_limit = self.shared.body_sample_max_bytes * 2
        sample = BodyCapture(make_decoder(encoding), head_limit=sample_limit) if self.sampling else None
        timed = False
        try:
            async for chunk in response.stream:  # raw bytes as they arrive, still compressed if they are
                if sample is not None:
                    sample.feed(chunk)
                out = watcher.feed(chunk)
                if not timed:
                    timed = self._time_first_event(watcher)
                if out:
                    await self.send({"type": "http.response.body", "body": out, "more_body": True})
        except httpx.HTTPError as exc:
            self._broke(exc)
        finally:
            # Also when the client hung up: what was seen so far is still worth logging.
            self._note_stream(watcher)
        if sample is not None:
            self._sample("response", sample.head)
        await self._end_response(watcher.finish())

    def _time_first_event(self, watcher: SseWatcher) -> bool:
        """Observe the time to the first event as soon as it came (the log's ttft); True from then on."""
        if watcher.first_event_at is None:
            return False
        metrics.observe_time_to_first_token(self.endpoint_label, watcher.first_event_at - self.started)
        return True

    async def _relay_body(self, response: httpx.Response, encoding: bytes | None, *, json_body: bool) -> None:
        wanted = json_body or response.status_code >= 400 or self.sampling
        capture = BodyCapture(make_decoder(encoding)) if wanted else None
        await self._start_response(response)
        try:
            async for chunk in response.stream:
                if capture is not None:
                    capture.feed(chunk)
                await self.send({"type": "http.response.body", "body": chunk, "more_body": True})
        except httpx.HTTPError as exc:
            self._broke(exc)
        if capture is not None:
            self._note_body(response, capture, json_body=json_body)
        await self._end_response(b"")

    async def _start_response(self, response: httpx.Response, *, drop_length: bool = False) -> None:
        headers = downstream_headers(response.headers.raw, drop_length=drop_length)
        await self.send({"type": "http.response.start", "status": response.status_code, "headers": headers})

    async def _end_response(self, last: bytes) -> None:
        await self.send({"type": "http.response.body", "body": last, "more_body": False})
        self.finished = True

    def _broke(self, exc: httpx.HTTPError) -> None:
        """Upstream failed mid-body: log it as a network error and cut the client connection."""
        classified = classify_error(None, None, exc=exc)
        self._classified(classified.category, classified.kind, classified.message)
        self.entry.extra["upstream_broke"] = True
        raise UpstreamBroke(f"upstream failed mid-response: {type(exc).__name__}") from None

    async def _transport_failed(self, exc: httpx.TransportError) -> None:
        # Not reached at all, or reached and then cut off before a response: the fixes differ.
        if isinstance(exc, httpx.TimeoutException):
            await self._upstream_failed(504, exc, "Together did not answer in time.", "upstream_timeout")
        elif isinstance(exc, UpstreamClosed):
            message = ("Together closed the connection after receiving the request, before answering; "
                       "the proxy did not send it again, since Together may have processed it.")
            await self._upstream_failed(502, exc, message, "upstream_connect_error")
        elif isinstance(exc, httpx.LocalProtocolError):
            message = f"The proxy refused to send the request to Together: {exc}."
            await self._upstream_failed(502, exc, message, "upstream_request_invalid")
        elif isinstance(exc, httpx.ConnectError):
            await self._upstream_failed(502, exc, "The proxy could not connect to Together.",
                                        "upstream_connect_error")
        else:
            await self._upstream_failed(502, exc, "Together closed the connection before answering.",
                                        "upstream_connect_error")

    async def _upstream_failed(self, status: int, exc: httpx.HTTPError, message: str, code: str) -> None:
        classified = classify_error(status, None, exc=exc)
        self._classified(classified.category, classified.kind, classified.message)
        body = error_body(f"{message} ({type(exc).__name__})", "server_error", code)
        await self._respond(status, body)

    # ---- the client side ---------------------------------------------------------------------------

    def _watch_for_disconnect(self) -> asyncio.Task:
        task = asyncio.current_task()
        assert task is not None

        async def watch() -> None:
            while True:
                message = await self.receive()
                if message["type"] == "http.disconnect":
                    break
            if not self.finished:
                self.client_gone = True
                task.cancel()

        return asyncio.ensure_future(watch())

    async def _refuse(self, refusal: Refusal) -> None:
        body = error_body(refusal.message, refusal.error_type, refusal.code, refusal.param)
        classified = classify_error(refusal.status, body, dict(refusal.headers), self.scope["path"])
        # The client sees Together's invalid_api_key; the log says it was our refusal of its app key,
        # which never reached Together and says nothing about the upstream key.
        kind = APP_KEY_REJECTED if refusal.code == "invalid_api_key" else classified.kind
        self._classified(classified.category, kind, classified.message)
        self.entry.extra["refused_by_proxy"] = True
        await self._respond(refusal.status, body, refusal.headers)

    async def _respond(self, status: int, body: bytes, extra: list[tuple[bytes, bytes]] = ()) -> None:
        """A response of the proxy's own (refusals and upstream failures)."""
        self.entry.status_code = status
        headers = [*_JSON_HEADERS, (b"content-length", str(len(body)).encode()), *extra]
        await self.send({"type": "http.response.start", "status": status, "headers": headers})
        await self.send({"type": "http.response.body", "body": body, "more_body": False})
        self.finished = True

    def _note_client_gone(self) -> None:
        self.entry.extra["client_disconnected"] = True
        if self.upstream_status is not None:
            self.entry.extra["upstream_status"] = self.upstream_status
        self.entry.status_code = CLIENT_CLOSED_REQUEST

    # ---- what the response says --------------------------------------------------------------------

    def _read_response_head(self, response: httpx.Response) -> dict[bytes, bytes]:
        """Status, request id and rate limits into the entry; the headers by lower-case name."""
        entry = self.entry
        entry.status_code = response.status_code
        head = {name.lower(): value for name, value in response.headers.raw}
        request_id = head.get(b"x-request-id") or head.get(b"cf-ray") or b""
        entry.request_id = request_id.decode("latin-1")[:100]
        limits = parse_ratelimit_headers({
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in head.items() if name.startswith(_RATE_LIMIT_PREFIXES)
        })
        entry.ratelimit_limit = _whole(limits.request_limit)
        entry.ratelimit_remaining = _whole(limits.request_remaining)
        entry.ratelimit_reset = limits.reset_seconds
        entry.tokenlimit_limit = _whole(limits.token_limit)
        entry.tokenlimit_remaining = _whole(limits.token_remaining)
        return head

    def _note_stream(self, watcher: SseWatcher) -> None:
        entry = self.entry
        if watcher.first_event_at is not None:
            entry.ttft_ms = (watcher.first_event_at - self.started) * 1000.0
        self._note_summary(BodySummary(watcher.model, watcher.response_id, watcher.usage))
        if watcher.error_event:
            # An error inside a stream that began as a success: classified by the status it names.
            classified = classify_error(watcher.error_status, watcher.error_event, path=self.scope["path"])
            self._classified(classified.category, classified.kind, classified.message)

    def _note_body(self, response: httpx.Response, capture: BodyCapture, *, json_body: bool) -> None:
        if json_body and response.status_code < 400:
            summary = capture.summary()
            self._note_summary(summary)
            if summary.broken:
                self._classify_broken(capture.head, response.headers)
        if self.sampling:
            self._sample("response", capture.head)
        if response.status_code >= 400:
            self._classify_upstream(capture.head, response.headers)

    def _classify_upstream(self, body: bytes, headers: httpx.Headers | None = None) -> None:
        secret = self.credential.upstream_secret if self.credential else ""
        classified = classify_error(
            self.upstream_status, body[:MAX_ERROR_BODY], headers, self.scope["path"],
            method=self.scope["method"], secrets=(secret,),
        )
        self._classified(classified.category, classified.kind, classified.message)

    def _classify_broken(self, body: bytes, headers: httpx.Headers) -> None:
        """A success status with a body that is not the JSON it claims to be: the client cannot use it."""
        secret = self.credential.upstream_secret if self.credential else ""
        classified = classify_bad_response(self.upstream_status, body[:MAX_ERROR_BODY], headers,
                                           secrets=(secret,))
        self._classified(classified.category, classified.kind, classified.message)

    def _note_summary(self, summary: BodySummary) -> None:
        entry = self.entry
        entry.model_served = summary.model[:200]
        if not entry.request_id and summary.response_id:
            entry.request_id = summary.response_id[:100]
        usage = summary.usage or Usage()
        entry.prompt_tokens = usage.prompt_tokens
        entry.completion_tokens = usage.completion_tokens
        entry.total_tokens = usage.total_tokens
        entry.cached_tokens = usage.cached_tokens

    def _classified(self, category: str, kind: str, message: str) -> None:
        self.entry.category, self.entry.kind, self.entry.error_message = category, kind, message[:1000]

    def _sample(self, part: str, data: bytes) -> None:
        """Keep a redacted, size-capped copy of a body in the log entry."""
        limit = self.shared.body_sample_max_bytes
        # Redact before cutting, so a secret cut in half by the cap cannot slip through.
        secrets = (self.credential.upstream_secret,) if self.credential else ()
        text = data[: limit * 2].decode("utf-8", errors="replace")
        text = redact(text, (*secrets, bearer_token(self.headers)))
        if self.storing_sample:
            self.entry.extra.setdefault("body_sample", {})[part] = text[:limit]
        if self.shared.capture_content:
            # For the span only: recording stores body_sample, never this.
            self.entry.extra.setdefault("content", {})[part] = text[:limit]

    def _log(self) -> None:
        entry = self.entry
        entry.latency_ms = (time.perf_counter() - self.started) * 1000.0
        metrics.count_request(self.endpoint_label, entry.status_code)
        self.shared.logs.put(entry)


def _rate_limited(credential: Credential, limit: int, wait: float) -> Refusal:
    headers = [
        (b"x-ratelimit-limit", str(limit).encode()),
        (b"x-ratelimit-remaining", b"0"),
        (b"x-ratelimit-reset", f"{wait:.3f}".encode()),
        (b"retry-after", str(max(1, int(wait + 0.999))).encode()),
    ]
    return Refusal(
        f"The app key {credential.app_key_name!r} is limited to {limit} requests per minute by the "
        f"dashboard; retry in {wait:.0f} s.",
        status=429, code="app_key_rate_limited", error_type="rate_limit_exceeded", headers=headers,
    )


def _over_budget(credential: Credential, over: OverBudget, now: datetime) -> Refusal:
    """The 429 of an app key over an enforced budget: which budget, what was spent, when it resets.

    x-should-retry: false tells the Stainless SDKs (together 2.x/3.x, OpenAI) not to retry a refusal
    that lasts until the reset; retry-after says how long that is.
    """
    budget = over.budget
    wait = max(1, int((over.resets_at - now).total_seconds() + 0.999))
    period = "day" if budget.period == "day" else "month"
    message = (
        f"The app key {credential.app_key_name!r} is over its budget {budget.name!r} "
        f"(${format_usd(budget.amount_usd)} per {period}, UTC): ${format_usd(over.spent_usd)} spent since "
        f"{over.period_start:%Y-%m-%d %H:%M} UTC. The budget resets at {over.resets_at:%Y-%m-%d %H:%M} UTC "
        f"(in {_duration(wait)}); a dashboard admin can raise it or stop enforcing it on /budgets/."
    )
    headers = [(b"retry-after", str(wait).encode()), (b"x-should-retry", b"false")]
    return Refusal(message, status=429, code="budget_exceeded", error_type="budget_exceeded", headers=headers)


def _duration(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    minutes = max(1, rest // 60) if not hours else rest // 60
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"


def _whole(value: float | None) -> int | None:
    return None if value is None else int(value)
