"""Call Together for every key at once and hand back one outcome per key; nothing here touches the DB.

Pollers read their keys from the database, run the HTTP calls of every key concurrently in one event
loop (bounded by a semaphore), then write the results synchronously. A failure on one key becomes that
key's outcome and never stops the others.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import ssl
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx
from django.conf import settings

from together_dash.keys.crypto import DecryptionError
from together_dash.keys.models import TogetherKey
from together_dash.together.client import AsyncTogetherClient, TogetherAPIError
from together_dash.together.errors import ClassifiedError, classify_error
from together_dash.together.ratelimits import RateLimitInfo
from together_dash.together.redact import redact

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class KeyRef:
    """What a poll needs of a key, read before the event loop starts (the ORM is sync-only)."""

    id: int
    name: str
    secret: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class KeyOutcome(Generic[T]):
    """The result of one key's calls: a value, or the classified error that stopped them."""

    key: KeyRef
    value: T | None = None
    error: ClassifiedError | None = None
    # Rate-limit headers of the failed response (a 429 says how much is left and when it resets).
    ratelimit: RateLimitInfo | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True)
class FanOutConfig:
    """Concurrency and time bounds of one fan-out; defaults come from settings."""

    base_url: str
    concurrency: int
    timeout: float
    connect_timeout: float
    key_deadline: float
    max_retry_wait: float
    # The client's httpx seam, per key: tests put a fault in front of one key's calls.
    transport: Callable[[KeyRef], httpx.AsyncBaseTransport | None] | None = None

    @classmethod
    def from_settings(cls) -> FanOutConfig:
        return cls(
            base_url=settings.TOGETHER_BASE_URL,
            concurrency=settings.POLLER_CONCURRENCY,
            timeout=settings.POLLER_TIMEOUT,
            connect_timeout=settings.TOGETHER_CONNECT_TIMEOUT,
            key_deadline=settings.POLLER_KEY_DEADLINE,
            max_retry_wait=settings.POLLER_MAX_RETRY_WAIT,
        )


Fetch = Callable[[AsyncTogetherClient, KeyRef], Awaitable[T]]


def key_refs(keys: Sequence[TogetherKey]) -> tuple[list[KeyRef], list[KeyOutcome[Any]]]:
    """Decrypt each key once; a key that cannot be decrypted becomes a failed outcome, not a crash."""
    refs: list[KeyRef] = []
    broken: list[KeyOutcome[Any]] = []
    for key in keys:
        try:
            refs.append(KeyRef(key.id, key.name, key.secret))
        except DecryptionError as exc:
            broken.append(KeyOutcome(KeyRef(key.id, key.name, ""), error=_undecryptable(exc)))
    return refs, broken


def _undecryptable(exc: DecryptionError) -> ClassifiedError:
    # A local configuration fault, not Together's: no request was made with this key.
    return ClassifiedError(
        category="auth",
        kind="undecryptable_key",
        retryable=False,
        cause="The stored secret cannot be decrypted with the configured FIELD_ENCRYPTION_KEYS.",
        fix="Restore the encryption key that made it (FIELD_ENCRYPTION_KEYS), or rotate the Together key.",
        message=str(exc),
    )


def make_client(key: KeyRef, config: FanOutConfig) -> AsyncTogetherClient:
    # One retry at most, and only short server-requested waits: a 429 asking for longer is recorded
    # and the key is skipped until then, so one limited key never holds up the whole poll.
    return AsyncTogetherClient(
        key.secret,
        base_url=config.base_url,
        timeout=config.timeout,
        connect_timeout=config.connect_timeout,
        max_retries=1,
        max_retry_wait=config.max_retry_wait,
        transport=_transport(key, config),
    )


def _transport(key: KeyRef, config: FanOutConfig) -> httpx.AsyncBaseTransport:
    # A pool per key, not one shared by all: httpcore's pool does work proportional to the requests
    # waiting in it at every step, which made one shared pool several times slower at 100 keys.
    if config.transport is not None:
        custom = config.transport(key)
        if custom is not None:
            return custom
    return httpx.AsyncHTTPTransport(verify=_ssl_context())


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    # Loading the CA bundle costs ~100 ms of CPU: once per process, not once per key and poll.
    return httpx.create_ssl_context()


def fan_out(
    keys: Sequence[KeyRef], fetch: Fetch[T], config: FanOutConfig | None = None
) -> list[KeyOutcome[T]]:
    """Run fetch for every key concurrently and return the outcomes in key order."""
    config = config or FanOutConfig.from_settings()
    if not keys:
        return []
    return run_sync(_gather(keys, fetch, config))


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, also from a thread that already runs an event loop (then in a helper thread)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _gather(keys: Sequence[KeyRef], fetch: Fetch[T], config: FanOutConfig) -> list[KeyOutcome[T]]:
    semaphore = asyncio.Semaphore(max(1, config.concurrency))
    return list(await asyncio.gather(*(_one(key, fetch, config, semaphore) for key in keys)))


async def _one(
    key: KeyRef, fetch: Fetch[T], config: FanOutConfig, semaphore: asyncio.Semaphore
) -> KeyOutcome[T]:
    async with semaphore:
        try:
            async with make_client(key, config) as client:
                value = await asyncio.wait_for(fetch(client, key), config.key_deadline)
        except TogetherAPIError as exc:
            return KeyOutcome(key, error=exc.classified, ratelimit=exc.ratelimit)
        except Exception as exc:  # one key's surprise must not cost the other keys their poll
            return KeyOutcome(key, error=_unexpected(exc, key))
    return KeyOutcome(key, value=value)


def _unexpected(exc: Exception, key: KeyRef) -> ClassifiedError:
    classified = classify_error(None, None, exc=exc, secrets=(key.secret,))
    message = redact(f"{type(exc).__name__}: {exc}", (key.secret,))[:500]
    return ClassifiedError(**{**classified.to_dict(), "message": message or classified.message})
