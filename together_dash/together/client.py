"""The one httpx seam to the Together API: one method per endpoint, typed results, classified errors."""
from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from decimal import Decimal
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Generic, Self, TypeVar
from urllib.parse import quote

import httpx

from together_dash.together.errors import ClassifiedError, classify_bad_response, classify_error
from together_dash.together.ratelimits import RateLimitInfo, parse_ratelimit_headers
from together_dash.together.types import (
    BatchJob,
    BillingUsageReport,
    DedicatedEndpoint,
    FileObject,
    FineTuneEvent,
    FineTuneJob,
    Hardware,
    Model,
    WhoAmI,
)

T = TypeVar("T")

DEFAULT_BASE_URL = "https://api.together.xyz/v1"
DEFAULT_TIMEOUT = 60.0
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_MAX_RETRIES = 2
# As in the SDKs (ref §4.3): a server asking for a longer wait gets an error, not a stalled worker.
DEFAULT_MAX_RETRY_WAIT = 60.0
CHUNK_SIZE = 64 * 1024


def _package_version() -> str:
    try:
        return version("together-dash")
    except PackageNotFoundError:  # running from a checkout, not an installed distribution
        return "0.1.0"


USER_AGENT = f"together-dash/{_package_version()}"


def key_fingerprint(secret: str) -> str:
    """Short sha256 of a key: attributes traffic to a key without storing the key."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class ApiResult(Generic[T]):
    """A successful call: the typed data plus what the response said about limits and timing."""

    data: T
    status: int
    ratelimit: RateLimitInfo
    request_id: str | None
    elapsed_ms: float


class TogetherAPIError(Exception):
    """A failed Together call (HTTP error, transport fault or unusable body), already classified."""

    def __init__(self, classified: ClassifiedError, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(classified.message)
        self.classified = classified
        self.status = classified.status
        self.headers: dict[str, str] = dict(headers or {})
        self.request_id = classified.request_id

    def __str__(self) -> str:
        return self.classified.message

    def __reduce__(self) -> tuple[type[TogetherAPIError], tuple[ClassifiedError, dict[str, str]]]:
        # Celery pickles task exceptions; the default reduce would rebuild us from the message alone.
        return (type(self), (self.classified, self.headers))

    def __repr__(self) -> str:
        message = self.classified.message
        return f"TogetherAPIError(status={self.status!r}, kind={self.kind!r}, message={message!r})"

    @property
    def category(self) -> str:
        """The taxonomy category, e.g. billing."""
        return self.classified.category

    @property
    def kind(self) -> str:
        """The taxonomy kind, e.g. insufficient_credits."""
        return self.classified.kind

    @property
    def retryable(self) -> bool:
        """Whether sending the same request again can succeed."""
        return self.classified.retryable

    @property
    def ratelimit(self) -> RateLimitInfo:
        """Rate-limit headers of the failed response (empty for transport errors)."""
        return parse_ratelimit_headers(self.headers)


# ---- endpoint descriptions, shared by the sync and async clients -----------------------------------

@dataclass(frozen=True, slots=True)
class _Upload:
    source: Path | bytes
    file_name: str
    fields: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class _Call(Generic[T]):
    """One request to make: where, with what, and how to turn the body into T."""

    method: str
    path: str
    parse: Callable[[Any], T]
    json: Any = None
    params: Mapping[str, str] | None = None
    upload: _Upload | None = None
    # Creating a job twice costs money: non-idempotent calls are only resent when the server surely
    # did not act on them (a 429, or a connection that never opened).
    idempotent: bool = True
    binary: bool = False


def _segment(value: str) -> str:
    """An id as one path segment, so an id can never reach another endpoint."""
    return quote(str(value), safe=":")


def _items(data: Any) -> list[Any]:
    """A bare JSON array, or the {"data": [...]} list shape some endpoints use."""
    if isinstance(data, list):
        return data
    if isinstance(data, Mapping) and isinstance(data.get("data"), list):
        return data["data"]
    raise TypeError("expected a JSON array or an object with a data array")


def _list_of(parse: Callable[[Any], T]) -> Callable[[Any], list[T]]:
    return lambda data: [parse(item) for item in _items(data)]


def _bytes(data: bytes) -> bytes:
    return data


def _models_call(dedicated: bool) -> _Call[list[Model]]:
    params = {"dedicated": "true"} if dedicated else None
    return _Call("GET", "/models", _list_of(Model.from_json), params=params)


def _billing_usage_call(
    month: str, granularity: str, after: str | None, limit: int | None, organization_id: str | None
) -> _Call[BillingUsageReport]:
    optional = {"after": after, "limit": str(limit) if limit else None, "organization_id": organization_id}
    params = {"month": month, "granularity": granularity}
    params.update({name: value for name, value in optional.items() if value})
    return _Call("GET", "/billing/usage", BillingUsageReport.from_json, params=params)


def _dedicated_endpoints(data: Any) -> list[DedicatedEndpoint]:
    # The listing also holds Together's serverless endpoints when a server ignores the type filter; an
    # entry that does not say it is dedicated is left out (its name would be priced per minute, $0 a token).
    entries = [item for item in _items(data) if isinstance(item, Mapping)]
    dedicated = [item for item in entries if item.get("type") == "dedicated"]
    return [DedicatedEndpoint.from_json(item) for item in dedicated]


def _hardware_list(content: bytes) -> list[Hardware]:
    # Prices are JSON numbers (cents per minute): read as Decimal, never through a float.
    return [Hardware.from_json(item) for item in _items(json.loads(content, parse_float=Decimal))]


_ENDPOINTS_CALL = _Call("GET", "/endpoints", _dedicated_endpoints, params={"type": "dedicated"})
_HARDWARE_CALL = _Call("GET", "/hardware", _hardware_list, binary=True)


def _create_endpoint_call(params: Mapping[str, Any]) -> _Call[DedicatedEndpoint]:
    return _Call("POST", "/endpoints", DedicatedEndpoint.from_json, json=dict(params), idempotent=False)


def _create_fine_tune_call(params: Mapping[str, Any]) -> _Call[FineTuneJob]:
    return _Call("POST", "/fine-tunes", FineTuneJob.from_json, json=dict(params), idempotent=False)


def _create_batch_call(input_file_id: str, endpoint: str, params: Mapping[str, Any]) -> _Call[BatchJob]:
    body = {"input_file_id": input_file_id, "endpoint": endpoint, **params}
    return _Call("POST", "/batches", BatchJob.from_json, json=body, idempotent=False)


def _file_type_for(file_name: str) -> str | None:
    suffix = Path(file_name).suffix.lower().lstrip(".")
    return suffix if suffix in ("jsonl", "parquet", "csv") else None


def _upload_call(
    source: str | Path | bytes, purpose: str, file_name: str | None, file_type: str | None
) -> _Call[FileObject]:
    if isinstance(source, str):
        source = Path(source)
    name = file_name or (source.name if isinstance(source, Path) else "upload.jsonl")
    fields = {"purpose": purpose, "file_name": name}
    detected = file_type or _file_type_for(name)
    if detected:
        fields["file_type"] = detected
    upload = _Upload(source=source, file_name=name, fields=fields)
    return _Call("POST", "/files/upload", FileObject.from_json, upload=upload, idempotent=False)


def _content_call(file_id: str) -> _Call[bytes]:
    return _Call("GET", f"/files/{_segment(file_id)}/content", _bytes, binary=True)


# ---- behaviour shared by both clients ----------------------------------------------------------------

def _backoff(attempt: int, jitter: Callable[[], float]) -> float:
    """Exponential backoff with jitter, as the v1 SDK does: min(0.5 * 2^n, 8) s, minus up to 25%."""
    return min(0.5 * 2**attempt, 8.0) * (1.0 - 0.25 * jitter())


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


def _resend_is_safe(error: TogetherAPIError) -> bool:
    """True when the server cannot have acted on the request."""
    never_sent = isinstance(error.__cause__, httpx.ConnectError | httpx.ConnectTimeout)
    return error.category == "rate_limit" or never_sent


class _BaseClient:
    """Configuration, request building, classification and the retry policy; no I/O."""

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        max_retry_wait: float = DEFAULT_MAX_RETRY_WAIT,
        headers: Mapping[str, str] | None = None,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        if not api_key or not isinstance(api_key, str):
            raise ValueError("api_key must be a non-empty string")
        self._api_key = api_key
        self.base_url = base_url.rstrip("/")
        self.timeout = httpx.Timeout(timeout, connect=connect_timeout)
        self.max_retries = max(0, max_retries)
        self.max_retry_wait = max_retry_wait
        self.fingerprint = key_fingerprint(api_key)
        self._jitter = jitter
        self._headers = {
            **(headers or {}),
            "Authorization": f"Bearer {api_key}",
            "User-Agent": USER_AGENT,
            "Accept": "application/json",
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r}, key_fingerprint={self.fingerprint!r})"

    def _request_kwargs(self, call: _Call[Any], stack: ExitStack) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"method": call.method, "url": call.path, "params": call.params}
        if call.json is not None:
            kwargs["json"] = call.json
        if call.upload is not None:
            # Opened per attempt, so a retried upload sends the whole file again.
            source = call.upload.source
            content = stack.enter_context(source.open("rb")) if isinstance(source, Path) else source
            kwargs["data"] = dict(call.upload.fields)
            kwargs["files"] = {"file": (call.upload.file_name, content, "application/octet-stream")}
        return kwargs

    def _result(self, call: _Call[T], response: httpx.Response, elapsed_ms: float) -> ApiResult[T]:
        if not response.is_success:
            raise self._status_error(call, response)
        try:
            data = call.parse(response.content if call.binary else response.json())
        except (ValueError, TypeError, KeyError) as exc:
            raise self._bad_body_error(call, response) from exc
        return ApiResult(
            data=data,
            status=response.status_code,
            ratelimit=parse_ratelimit_headers(response.headers),
            request_id=response.headers.get("x-request-id") or response.headers.get("cf-ray"),
            elapsed_ms=elapsed_ms,
        )

    def _status_error(self, call: _Call[Any], response: httpx.Response) -> TogetherAPIError:
        classified = classify_error(
            response.status_code,
            response.content,
            response.headers,
            path=call.path,
            method=call.method,
            secrets=(self._api_key,),
        )
        return TogetherAPIError(classified, response.headers)

    def _bad_body_error(self, call: _Call[Any], response: httpx.Response) -> TogetherAPIError:
        classified = classify_bad_response(
            response.status_code, response.content, response.headers, secrets=(self._api_key,)
        )
        return TogetherAPIError(classified, response.headers)

    def _transport_error(self, call: _Call[Any], exc: BaseException) -> TogetherAPIError:
        classified = classify_error(
            None, None, path=call.path, exc=exc, method=call.method, secrets=(self._api_key,)
        )
        return TogetherAPIError(classified)

    def _retry_wait(self, call: _Call[Any], error: TogetherAPIError, attempt: int) -> float | None:
        """Seconds to wait before the next attempt, or None to give up and raise."""
        if attempt >= self.max_retries or not error.retryable:
            return None
        if not call.idempotent and not _resend_is_safe(error):
            return None
        hint = error.classified.retry_after
        if hint is not None and hint > self.max_retry_wait:
            return None
        if hint is not None and hint > 0:
            return hint
        return _backoff(attempt, self._jitter)


_TRANSPORT_ERRORS = (httpx.RequestError, OSError)


# ---- sync --------------------------------------------------------------------------------------------

class TogetherClient(_BaseClient):
    """Blocking Together client for pollers, management commands and scripts."""

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        max_retry_wait: float = DEFAULT_MAX_RETRY_WAIT,
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        super().__init__(
            api_key,
            base_url=base_url,
            timeout=timeout,
            connect_timeout=connect_timeout,
            max_retries=max_retries,
            max_retry_wait=max_retry_wait,
            headers=headers,
            jitter=jitter,
        )
        self._sleep = sleep
        self._http = httpx.Client(
            base_url=self.base_url + "/", headers=self._headers, timeout=self.timeout, transport=transport
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def list_models(self, dedicated: bool = False) -> ApiResult[list[Model]]:
        """GET /models (free: also the cheapest key-health probe)."""
        return self._run(_models_call(dedicated))

    def whoami(self) -> ApiResult[WhoAmI]:
        """GET /whoami: organisation and project of the key."""
        return self._run(_Call("GET", "/whoami", WhoAmI.from_json))

    def billing_usage(
        self,
        month: str,
        granularity: str = "hour",
        after: str | None = None,
        limit: int | None = None,
        organization_id: str | None = None,
    ) -> ApiResult[BillingUsageReport]:
        """GET /billing/usage: one page of the finished billing windows of a month (YYYY-MM)."""
        return self._run(_billing_usage_call(month, granularity, after, limit, organization_id))

    def list_endpoints(self) -> ApiResult[list[DedicatedEndpoint]]:
        """GET /endpoints?type=dedicated: the dedicated endpoints the key can see."""
        return self._run(_ENDPOINTS_CALL)

    def list_hardware(self) -> ApiResult[list[Hardware]]:
        """GET /hardware: every hardware configuration and its price per minute, exactly."""
        return self._run(_HARDWARE_CALL)

    def create_endpoint(self, **params: Any) -> ApiResult[DedicatedEndpoint]:
        """POST /endpoints (model, hardware, autoscaling, inactive_timeout...): it bills while running."""
        return self._run(_create_endpoint_call(params))

    def list_fine_tunes(self) -> ApiResult[list[FineTuneJob]]:
        """GET /fine-tunes (truncated job objects)."""
        return self._run(_Call("GET", "/fine-tunes", _list_of(FineTuneJob.from_json)))

    def get_fine_tune(self, job_id: str) -> ApiResult[FineTuneJob]:
        """GET /fine-tunes/{id} (full job object with events)."""
        return self._run(_Call("GET", f"/fine-tunes/{_segment(job_id)}", FineTuneJob.from_json))

    def list_fine_tune_events(self, job_id: str) -> ApiResult[list[FineTuneEvent]]:
        """GET /fine-tunes/{id}/events."""
        path = f"/fine-tunes/{_segment(job_id)}/events"
        return self._run(_Call("GET", path, _list_of(FineTuneEvent.from_json)))

    def create_fine_tune(self, **params: Any) -> ApiResult[FineTuneJob]:
        """POST /fine-tunes with the request fields as keyword arguments."""
        return self._run(_create_fine_tune_call(params))

    def list_batches(self) -> ApiResult[list[BatchJob]]:
        """GET /batches (a bare array)."""
        return self._run(_Call("GET", "/batches", _list_of(BatchJob.from_json)))

    def create_batch(
        self, input_file_id: str, endpoint: str = "/v1/chat/completions", **params: Any
    ) -> ApiResult[BatchJob]:
        """POST /batches; the 201 {job, warning} wrapper is unwrapped into BatchJob."""
        return self._run(_create_batch_call(input_file_id, endpoint, params))

    def upload_file(
        self,
        source: str | Path | bytes,
        purpose: str = "fine-tune",
        file_name: str | None = None,
        file_type: str | None = None,
    ) -> ApiResult[FileObject]:
        """POST /files/upload as multipart, from a path (streamed from disk) or bytes."""
        return self._run(_upload_call(source, purpose, file_name, file_type))

    def iter_file_content(self, file_id: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        """GET /files/{id}/content in chunks, never holding the whole file."""
        call = _content_call(file_id)
        response = self._with_retries(call, self._open_stream)
        try:
            yield from response.iter_bytes(chunk_size)
        except _TRANSPORT_ERRORS as exc:
            raise self._transport_error(call, exc) from exc
        finally:
            response.close()

    def _run(self, call: _Call[T]) -> ApiResult[T]:
        return self._with_retries(call, self._attempt)

    def _with_retries(self, call: _Call[T], attempt_once: Callable[[_Call[T]], Any]) -> Any:
        attempt = 0
        while True:
            try:
                return attempt_once(call)
            except TogetherAPIError as error:
                wait = self._retry_wait(call, error, attempt)
                if wait is None:
                    raise
            self._sleep(wait)
            attempt += 1

    def _attempt(self, call: _Call[T]) -> ApiResult[T]:
        started = time.perf_counter()
        with ExitStack() as stack:
            try:
                response = self._http.request(**self._request_kwargs(call, stack))
            except _TRANSPORT_ERRORS as exc:
                raise self._transport_error(call, exc) from exc
        return self._result(call, response, _ms_since(started))

    def _open_stream(self, call: _Call[Any]) -> httpx.Response:
        request = self._http.build_request(call.method, call.path, params=call.params)
        try:
            response = self._http.send(request, stream=True)
            if response.is_success:
                return response
            try:
                response.read()
            finally:
                response.close()
        except _TRANSPORT_ERRORS as exc:
            raise self._transport_error(call, exc) from exc
        raise self._status_error(call, response)


# ---- async -------------------------------------------------------------------------------------------

class AsyncTogetherClient(_BaseClient):
    """Asyncio Together client with the same methods as TogetherClient, awaited."""

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        max_retry_wait: float = DEFAULT_MAX_RETRY_WAIT,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        super().__init__(
            api_key,
            base_url=base_url,
            timeout=timeout,
            connect_timeout=connect_timeout,
            max_retries=max_retries,
            max_retry_wait=max_retry_wait,
            headers=headers,
            jitter=jitter,
        )
        self._sleep = sleep
        self._http = httpx.AsyncClient(
            base_url=self.base_url + "/", headers=self._headers, timeout=self.timeout, transport=transport
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    aclose = close

    async def list_models(self, dedicated: bool = False) -> ApiResult[list[Model]]:
        """GET /models (free: also the cheapest key-health probe)."""
        return await self._run(_models_call(dedicated))

    async def whoami(self) -> ApiResult[WhoAmI]:
        """GET /whoami: organisation and project of the key."""
        return await self._run(_Call("GET", "/whoami", WhoAmI.from_json))

    async def billing_usage(
        self,
        month: str,
        granularity: str = "hour",
        after: str | None = None,
        limit: int | None = None,
        organization_id: str | None = None,
    ) -> ApiResult[BillingUsageReport]:
        """GET /billing/usage: one page of the finished billing windows of a month (YYYY-MM)."""
        return await self._run(_billing_usage_call(month, granularity, after, limit, organization_id))

    async def list_endpoints(self) -> ApiResult[list[DedicatedEndpoint]]:
        """GET /endpoints?type=dedicated: the dedicated endpoints the key can see."""
        return await self._run(_ENDPOINTS_CALL)

    async def list_hardware(self) -> ApiResult[list[Hardware]]:
        """GET /hardware: every hardware configuration and its price per minute, exactly."""
        return await self._run(_HARDWARE_CALL)

    async def create_endpoint(self, **params: Any) -> ApiResult[DedicatedEndpoint]:
        """POST /endpoints (model, hardware, autoscaling, inactive_timeout...): it bills while running."""
        return await self._run(_create_endpoint_call(params))

    async def list_fine_tunes(self) -> ApiResult[list[FineTuneJob]]:
        """GET /fine-tunes (truncated job objects)."""
        return await self._run(_Call("GET", "/fine-tunes", _list_of(FineTuneJob.from_json)))

    async def get_fine_tune(self, job_id: str) -> ApiResult[FineTuneJob]:
        """GET /fine-tunes/{id} (full job object with events)."""
        return await self._run(_Call("GET", f"/fine-tunes/{_segment(job_id)}", FineTuneJob.from_json))

    async def list_fine_tune_events(self, job_id: str) -> ApiResult[list[FineTuneEvent]]:
        """GET /fine-tunes/{id}/events."""
        path = f"/fine-tunes/{_segment(job_id)}/events"
        return await self._run(_Call("GET", path, _list_of(FineTuneEvent.from_json)))

    async def create_fine_tune(self, **params: Any) -> ApiResult[FineTuneJob]:
        """POST /fine-tunes with the request fields as keyword arguments."""
        return await self._run(_create_fine_tune_call(params))

    async def list_batches(self) -> ApiResult[list[BatchJob]]:
        """GET /batches (a bare array)."""
        return await self._run(_Call("GET", "/batches", _list_of(BatchJob.from_json)))

    async def create_batch(
        self, input_file_id: str, endpoint: str = "/v1/chat/completions", **params: Any
    ) -> ApiResult[BatchJob]:
        """POST /batches; the 201 {job, warning} wrapper is unwrapped into BatchJob."""
        return await self._run(_create_batch_call(input_file_id, endpoint, params))

    async def upload_file(
        self,
        source: str | Path | bytes,
        purpose: str = "fine-tune",
        file_name: str | None = None,
        file_type: str | None = None,
    ) -> ApiResult[FileObject]:
        """POST /files/upload as multipart, from a path (streamed from disk) or bytes."""
        return await self._run(_upload_call(source, purpose, file_name, file_type))

    async def iter_file_content(self, file_id: str, chunk_size: int = CHUNK_SIZE) -> AsyncIterator[bytes]:
        """GET /files/{id}/content in chunks, never holding the whole file."""
        call = _content_call(file_id)
        response = await self._with_retries(call, self._open_stream)
        try:
            async for chunk in response.aiter_bytes(chunk_size):
                yield chunk
        except _TRANSPORT_ERRORS as exc:
            raise self._transport_error(call, exc) from exc
        finally:
            await response.aclose()

    async def _run(self, call: _Call[T]) -> ApiResult[T]:
        return await self._with_retries(call, self._attempt)

    async def _with_retries(self, call: _Call[T], attempt_once: Callable[[_Call[T]], Awaitable[Any]]) -> Any:
        attempt = 0
        while True:
            try:
                return await attempt_once(call)
            except TogetherAPIError as error:
                wait = self._retry_wait(call, error, attempt)
                if wait is None:
                    raise
            await self._sleep(wait)
            attempt += 1

    async def _attempt(self, call: _Call[T]) -> ApiResult[T]:
        started = time.perf_counter()
        with ExitStack() as stack:
            try:
                response = await self._http.request(**self._request_kwargs(call, stack))
            except _TRANSPORT_ERRORS as exc:
                raise self._transport_error(call, exc) from exc
        return self._result(call, response, _ms_since(started))

    async def _open_stream(self, call: _Call[Any]) -> httpx.Response:
        request = self._http.build_request(call.method, call.path, params=call.params)
        try:
            response = await self._http.send(request, stream=True)
            if response.is_success:
                return response
            try:
                await response.aread()
            finally:
                await response.aclose()
        except _TRANSPORT_ERRORS as exc:
            raise self._transport_error(call, exc) from exc
        raise self._status_error(call, response)
