"""Who is calling and with which upstream key: app keys (or pass-through keys) to credentials, cached.

The hot path never touches the database: an app key is resolved once per key (by its prefix) in a
worker thread and the answer (good or bad) is kept for PROXY_KEY_CACHE_SECONDS, so a revoke takes effect
within that time at the latest. Sooner in practice: every key change bumps keys.cache's version, which
the cache polls in the background every VERSION_CHECK_SECONDS and drops all answers when it moved. When
the database is away, a known key keeps working on its last good answer.

Nothing a client makes up reaches that thread. A presented secret is checked against its key's hashes
in memory; a prefix no key has is refused from an index of every prefix, reloaded at most every
INDEX_RELOAD_SECONDS however many unknown keys arrive; pass-through keys are attributed from the same
index. So a flood of random bearer tokens costs the database one query a second and never queues a real
key's lookup behind it.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import ParamSpec, TypeVar

from django.db import Error as DatabaseError
from django.db import connection
from django.utils import timezone

from together_dash.keys.cache import key_cache_version
from together_dash.keys.crypto import DecryptionError
from together_dash.keys.models import AppKey, TogetherKey
from together_dash.together.client import key_fingerprint

logger = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")

# The kind a request log gets when the proxy refuses the app key a client sent (together.errors.TAXONOMY).
APP_KEY_REJECTED = "app_key_rejected"
MAX_CACHED_KEYS = 10_000
# After a failed refresh a stale answer is trusted this long before the database is asked again.
STALE_GRACE_SECONDS = 5.0
VERSION_CHECK_SECONDS = 0.25
INDEX_RELOAD_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class Credential:
    """What the proxy forwards with and attributes traffic to; the secret never appears in a repr."""

    upstream_secret: str = field(repr=False)
    key_fingerprint: str
    app_key_id: int | None = None
    app_key_name: str = ""
    upstream_key_id: int | None = None
    allowed_models: frozenset[str] = frozenset()
    rate_limit_per_minute: int | None = None

    def allows_model(self, model: str) -> bool:
        return not self.allowed_models or model in self.allowed_models


class Refusal(Exception):
    """A request the proxy answers itself, in Together's error shape; never names a presented secret."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 401,
        code: str = "invalid_api_key",
        error_type: str = "invalid_request_error",
        param: str | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
        app_key_id: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.error_type = error_type
        self.param = param
        self.headers = headers or []
        self.app_key_id = app_key_id


def no_key() -> Refusal:
    return Refusal(
        "You didn't provide an API key. Send the app key the dashboard issued you as "
        "'Authorization: Bearer <app key>'."
    )


def unknown_key() -> Refusal:
    return Refusal(
        "Invalid app key provided. Ask a dashboard admin for an app key "
        "(python manage.py create_app_key NAME)."
    )


# ---- resolving a key (sync, in the key thread) ------------------------------------------------------

@dataclass(frozen=True, slots=True)
class KeyIndex:
    """Every app key's prefix and every upstream key's fingerprint, as of one query."""

    loaded_at: float  # time.monotonic() when the query started: keys committed before it are in
    prefixes: frozenset[str]
    fingerprints: dict[str, int]


def load_key_index() -> KeyIndex:
    started = time.monotonic()
    prefixes = frozenset(AppKey.objects.values_list("prefix", flat=True))
    fingerprints = dict(TogetherKey.objects.values_list("fingerprint", "pk"))
    return KeyIndex(started, prefixes, fingerprints)


def _never(presented: str) -> bool:
    return False


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One app key as the database had it: how to check a presented secret, and what it grants."""

    matches: Callable[[str], bool]
    credential: Credential | None = None
    failure: Refusal | None = None


def resolve_app_key(prefix: str) -> KeyRecord:
    """The app key with this prefix: its hash check, and its credential or the Refusal saying why not."""
    key = AppKey.objects.select_related("upstream_key").filter(prefix=prefix).first()
    if key is None:
        return KeyRecord(_never, failure=unknown_key())
    try:
        _check_usable(key)
        upstream = _upstream_for(key)
        try:
            secret = upstream.secret
        except DecryptionError:
            raise Refusal(
                f"The upstream Together key {upstream.name!r} cannot be decrypted with the dashboard's "
                "FIELD_ENCRYPTION_KEYS; an admin must re-enter it.",
                app_key_id=key.pk,
            ) from None
    except Refusal as failure:
        return KeyRecord(key.matches, failure=failure)
    _note_use(key)
    credential = Credential(
        upstream_secret=secret,
        key_fingerprint=upstream.fingerprint,
        app_key_id=key.pk,
        app_key_name=key.name,
        upstream_key_id=upstream.pk,
        allowed_models=frozenset(key.allowed_models or ()),
        rate_limit_per_minute=key.rate_limit_per_minute,
    )
    return KeyRecord(key.matches, credential=credential)
def _check_usable(key: AppKey) -> None:
    label = f"{key.name!r} ({AppKey.KIND}_{key.prefix}_…)"
    if key.status == AppKey.Status.REVOKED:
        when = f" on {key.revoked_at:%Y-%m-%d %H:%M} UTC" if key.revoked_at else ""
        raise Refusal(f"The app key {label} was revoked{when}.", app_key_id=key.pk)
    if not key.is_usable:
        expired = f"{key.expires_at:%Y-%m-%d %H:%M} UTC"
        raise Refusal(f"The app key {label} expired on {expired}.", app_key_id=key.pk)


def _upstream_for(key: AppKey) -> TogetherKey:
    upstream = key.upstream_key
    if upstream is None:
        # No explicit mapping: fine as long as there is exactly one key to use.
        active = list(TogetherKey.objects.filter(status=TogetherKey.Status.ACTIVE)[:2])
        if len(active) != 1:
            raise Refusal(
                f"The app key {key.name!r} has no upstream Together key and there is not exactly one "
                "active key to use instead; assign one in the dashboard.",
                app_key_id=key.pk,
            )
        upstream = active[0]
    if not upstream.is_active:
        raise Refusal(
            f"The upstream Together key {upstream.name!r} behind the app key {key.name!r} was revoked; "
            "assign another upstream key to the app key.",
            app_key_id=key.pk,
        )
    return upstream


def _note_use(key: AppKey) -> None:
    """Record when the key was last used; at most once per cache period, and never fatal."""
    try:
        AppKey.objects.filter(pk=key.pk).update(last_used_at=timezone.now())
    except DatabaseError:
        logger.warning("Could not record the last use of app key %s", key.pk)


def passthrough_credential(presented: str, index: KeyIndex | None) -> Credential:
    """A client's own Together key: forwarded as is, attributed by its fingerprint."""
    fingerprint = key_fingerprint(presented)
    known = index.fingerprints.get(fingerprint) if index is not None else None
    return Credential(upstream_secret=presented, key_fingerprint=fingerprint, upstream_key_id=known)


def reconnecting(load: Callable[P, T]) -> Callable[P, T]:
    """Load, closing this thread's database connection after a database error.

    Django replaces a broken connection only when a request starts or ends, and the key thread serves
    none: without this, a connection cut by a database restart failed every later lookup, so once the
    database was back new keys got 503s and known keys lived on their stale answers for good.
    """

    def load_or_close(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return load(*args, **kwargs)
        except DatabaseError:
            connection.close()
            raise

    return load_or_close


# ---- the cache (async, on the event loop) -----------------------------------------------------------

@dataclass(slots=True)
class _Entry:
    expires_at: float
    record: KeyRecord

    def answer(self, presented: str) -> Credential:
        if not self.record.matches(presented):
            raise unknown_key()
        if self.record.failure is not None:
            # A fresh traceback each time: re-raising a kept exception would grow its traceback forever.
            raise self.record.failure.with_traceback(None)
        assert self.record.credential is not None
        return self.record.credential


class CredentialCache:
    """Presented key -> credential (or refusal) for ttl seconds; one lookup per app key at a time."""

    def __init__(
        self,
        executor: Executor,
        ttl: float = 2.0,
        *,
        passthrough: bool = False,
        read_version: Callable[[], int] | None = key_cache_version,
        load_key: Callable[[str], KeyRecord] = reconnecting(resolve_app_key),
        load_index: Callable[[], KeyIndex] = reconnecting(load_key_index),
    ) -> None:
        self.executor = executor
        self.ttl = ttl
        self.passthrough = passthrough
        self.read_version = read_version
        self.load_key = load_key
        self.load_index = load_index
        self._entries: dict[str, _Entry] = {}  # by app key prefix, oldest first
        self._lookups: dict[str, asyncio.Future[_Entry]] = {}
        self._index: KeyIndex | None = None
        self._index_load: asyncio.Future[KeyIndex] | None = None
        self._index_stale = False
        self._version: int | None = None
        self._version_checked_at = 0.0
        self._version_check: asyncio.Future[int] | None = None

    async def get(self, presented: str) -> Credential:
        """The credential for a presented key; raises Refusal."""
        arrived = time.monotonic()
        self._poll_version()
        parts = AppKey.split(presented)
        if parts is None:
            if not self.passthrough:
                raise unknown_key()
            return passthrough_credential(presented, await self._attribution_index())
        prefix = parts[0]
        if not await self._is_known(prefix, arrived):
            raise unknown_key()
        entry = self._entries.get(prefix)
        if entry is None or entry.expires_at <= time.monotonic():
            entry = await self._lookup(prefix, entry)
        return entry.answer(presented)

    def forget(self) -> None:
        """Drop every cached answer (the next request per key asks the database again)."""
        self._entries.clear()
        self._index_stale = True

    # ---- the index of prefixes --------------------------------------------------------------------

    async def _attribution_index(self) -> KeyIndex | None:
        """The index for pass-through attribution: loaded once, then refreshed behind the requests."""
        if self._index is None:
            try:
                return await asyncio.shield(self._reload_index_soon())
            except DatabaseError:
                return None  # attribution by fingerprint alone still works
        if self._index_stale:
            self._reload_index_soon()
        return self._index

    async def _is_known(self, prefix: str, arrived: float) -> bool:
        """Whether a key with this prefix existed when the request arrived (the index may reload)."""
        if self._index is not None and prefix in self._index.prefixes:
            return True
        try:
            while self._index is None or self._index.loaded_at < arrived:
                await asyncio.shield(self._reload_index_soon())
        except DatabaseError as exc:
            raise self._unavailable(exc) from None
        return prefix in self._index.prefixes

    def _reload_index_soon(self) -> asyncio.Future[KeyIndex]:
        """The index load under way, or a new one, at most one per INDEX_RELOAD_SECONDS."""
        if self._index_load is None:
            last = self._index.loaded_at if self._index is not None else -INDEX_RELOAD_SECONDS
            delay = max(0.0, last + INDEX_RELOAD_SECONDS - time.monotonic())
            self._index_load = asyncio.ensure_future(self._load_index(delay))
            # A reload nobody waits for (pass-through attribution) may fail: the next one tries again.
            self._index_load.add_done_callback(lambda load: load.cancelled() or load.exception())
        return self._index_load

    async def _load_index(self, delay: float) -> KeyIndex:
        try:
            if delay:
                await asyncio.sleep(delay)
            loop = asyncio.get_running_loop()
            self._index_stale = False
            self._index = await loop.run_in_executor(self.executor, self.load_index)
            return self._index
        finally:
            self._index_load = None

    # ---- one app key ------------------------------------------------------------------------------

    async def _lookup(self, prefix: str, previous: _Entry | None) -> _Entry:
        lookup = self._lookups.get(prefix)
        if lookup is None:
            lookup = asyncio.ensure_future(self._refresh(prefix, previous))
            self._lookups[prefix] = lookup
            lookup.add_done_callback(lambda _: self._lookups.pop(prefix, None))
        # Shielded: a client that hangs up must not cancel the lookup other requests wait on.
        return await asyncio.shield(lookup)

    async def _refresh(self, prefix: str, previous: _Entry | None) -> _Entry:
        loop = asyncio.get_running_loop()
        try:
            record = await loop.run_in_executor(self.executor, self.load_key, prefix)
            entry = _Entry(time.monotonic() + self.ttl, record)
        except DatabaseError as exc:
            entry = self._without_database(previous, exc)
        self._remember(prefix, entry)
        return entry

    def _without_database(self, previous: _Entry | None, exc: DatabaseError) -> _Entry:
        expires_at = time.monotonic() + min(self.ttl, STALE_GRACE_SECONDS)
        if previous is not None and previous.record.credential is not None:
            logger.warning("Cannot check app keys, the database is unavailable (%s)", type(exc).__name__)
            return _Entry(expires_at, previous.record)
        # Not cached: the next request asks again.
        return _Entry(0.0, KeyRecord(lambda presented: True, failure=self._unavailable(exc)))

    @staticmethod
    def _unavailable(exc: DatabaseError) -> Refusal:
        logger.warning("Cannot check app keys, the database is unavailable (%s)", type(exc).__name__)
        return Refusal(
            "The dashboard cannot check API keys right now (its database is unavailable); retry shortly.",
            status=503, code="key_check_unavailable", error_type="server_error",
        )

    def _remember(self, prefix: str, entry: _Entry) -> None:
        """Keep the entry; past MAX_CACHED_KEYS the oldest one goes (never all of them at once)."""
        self._entries.pop(prefix, None)
        if len(self._entries) >= MAX_CACHED_KEYS:
            del self._entries[next(iter(self._entries))]
        self._entries[prefix] = entry

    # ---- the key-state version --------------------------------------------------------------------

    def _poll_version(self) -> None:
        """Now and then, read the key-state version in the background (it may live in Redis)."""
        now = time.monotonic()
        if self.read_version is None or self._version_check is not None:
            return
        if now - self._version_checked_at < VERSION_CHECK_SECONDS:
            return
        self._version_checked_at = now
        check = asyncio.get_running_loop().run_in_executor(self.executor, self.read_version)
        self._version_check = check
        check.add_done_callback(self._on_version)

    def _on_version(self, check: asyncio.Future[int]) -> None:
        self._version_check = None
        if check.cancelled() or check.exception() is not None:
            return  # an unreachable cache leaves the TTL in charge
        version = check.result()
        if version != self._version:
            if self._version is not None:
                self.forget()
            self._version = version
