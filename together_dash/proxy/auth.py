"""Who is calling and with which upstream key: app keys (or pass-through keys) to credentials, cached.

The hot path never touches the database: a presented key is resolved once in a worker thread and the
answer (good or bad) is kept for PROXY_KEY_CACHE_SECONDS, so a revoke takes effect within that time at
the latest. Sooner in practice: every key change bumps keys.cache's version, which the cache polls in
the background every VERSION_CHECK_SECONDS and drops all answers when it moved. When the database is
away, a known key keeps working on its last good answer.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

from django.db import Error as DatabaseError
from django.db import connection
from django.utils import timezone

from together_dash.keys.cache import key_cache_version
from together_dash.keys.crypto import DecryptionError
from together_dash.keys.models import AppKey, TogetherKey
from together_dash.together.client import key_fingerprint

logger = logging.getLogger(__name__)

MAX_CACHED_KEYS = 10_000
# After a failed refresh a stale answer is trusted this long before the database is asked again.
STALE_GRACE_SECONDS = 5.0
VERSION_CHECK_SECONDS = 0.25


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


# ---- resolving a presented key (sync, in a worker thread) -------------------------------------------

def resolve_app_key(presented: str) -> Credential:
    """The credential behind an app key, or Refusal saying why there is none."""
    parts = AppKey.split(presented)
    if parts is None:
        raise unknown_key()
    key = AppKey.objects.select_related("upstream_key").filter(prefix=parts[0]).first()
    if key is None or not key.matches(presented):
        raise unknown_key()
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
    _note_use(key)
    return Credential(
        upstream_secret=secret,
        key_fingerprint=upstream.fingerprint,
        app_key_id=key.pk,
        app_key_name=key.name,
        upstream_key_id=upstream.pk,
        allowed_models=frozenset(key.allowed_models or ()),
        rate_limit_per_minute=key.rate_limit_per_minute,
    )


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


def resolve_passthrough_key(presented: str) -> Credential:
    """A client's own Together key: forwarded as is, attributed by its fingerprint."""
    fingerprint = key_fingerprint(presented)
    try:
        known = TogetherKey.objects.filter(fingerprint=fingerprint).values_list("pk", flat=True).first()
    except DatabaseError:
        connection.close()  # see reconnecting()
        known = None  # attribution by fingerprint alone still works
    return Credential(upstream_secret=presented, key_fingerprint=fingerprint, upstream_key_id=known)


def resolver_for(passthrough: bool) -> Callable[[str], Credential]:
    """App keys always work; in pass-through mode anything else is taken as the client's Together key."""
    if not passthrough:
        return reconnecting(resolve_app_key)

    def resolve(presented: str) -> Credential:
        if AppKey.split(presented) is not None:
            return resolve_app_key(presented)
        return resolve_passthrough_key(presented)

    return reconnecting(resolve)


def reconnecting(resolve: Callable[[str], Credential]) -> Callable[[str], Credential]:
    """Resolve, closing this thread's database connection after a database error.

    Django replaces a broken connection only when a request starts or ends, and the key thread serves
    none: without this, a connection cut by a database restart failed every later lookup, so once the
    database was back new keys got 503s and known keys lived on their stale answers for good.
    """

    def resolve_or_close(presented: str) -> Credential:
        try:
            return resolve(presented)
        except DatabaseError:
            connection.close()
            raise

    return resolve_or_close


# ---- the cache (async, on the event loop) -----------------------------------------------------------

@dataclass(slots=True)
class _Answer:
    expires_at: float
    credential: Credential | None = None
    failure: Refusal | None = None

    def unwrap(self) -> Credential:
        if self.failure is not None:
            # A fresh traceback each time: re-raising a kept exception would grow its traceback forever.
            raise self.failure.with_traceback(None)
        assert self.credential is not None
        return self.credential


class CredentialCache:
    """Presented key -> credential (or refusal) for ttl seconds; one lookup per key at a time."""

    def __init__(
        self,
        resolve: Callable[[str], Credential],
        executor: Executor,
        ttl: float = 2.0,
        read_version: Callable[[], int] | None = key_cache_version,
    ) -> None:
        self.resolve = resolve
        self.executor = executor
        self.ttl = ttl
        self.read_version = read_version
        self._answers: dict[str, _Answer] = {}
        self._lookups: dict[str, asyncio.Future[_Answer]] = {}
        self._version: int | None = None
        self._version_checked_at = 0.0
        self._version_check: asyncio.Future[int] | None = None

    async def get(self, presented: str) -> Credential:
        """The credential for a presented key; raises Refusal."""
        self._poll_version()
        answer = self._answers.get(presented)
        if answer is not None and answer.expires_at > time.monotonic():
            return answer.unwrap()
        lookup = self._lookups.get(presented)
        if lookup is None:
            lookup = asyncio.ensure_future(self._refresh(presented, answer))
            self._lookups[presented] = lookup
            lookup.add_done_callback(lambda _: self._lookups.pop(presented, None))
        # Shielded: a client that hangs up must not cancel the lookup other requests wait on.
        return (await asyncio.shield(lookup)).unwrap()

    def forget(self) -> None:
        """Drop every cached answer (the next request per key asks the database again)."""
        self._answers.clear()

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

    async def _refresh(self, presented: str, previous: _Answer | None) -> _Answer:
        loop = asyncio.get_running_loop()
        try:
            credential = await loop.run_in_executor(self.executor, self.resolve, presented)
            answer = _Answer(time.monotonic() + self.ttl, credential=credential)
        except Refusal as failure:
            answer = _Answer(time.monotonic() + self.ttl, failure=failure)
        except DatabaseError as exc:
            answer = self._without_database(previous, exc)
        self._remember(presented, answer)
        return answer

    def _without_database(self, previous: _Answer | None, exc: DatabaseError) -> _Answer:
        logger.warning("Cannot check app keys, the database is unavailable (%s)", type(exc).__name__)
        expires_at = time.monotonic() + min(self.ttl, STALE_GRACE_SECONDS)
        if previous is not None and previous.credential is not None:
            return _Answer(expires_at, credential=previous.credential)
        failure = Refusal(
            "The dashboard cannot check API keys right now (its database is unavailable); retry shortly.",
            status=503, code="key_check_unavailable", error_type="server_error",
        )
        # Not cached: the next request asks again.
        return _Answer(0.0, failure=failure)

    def _remember(self, presented: str, answer: _Answer) -> None:
        if len(self._answers) >= MAX_CACHED_KEYS:
            now = time.monotonic()
            self._answers = {key: kept for key, kept in self._answers.items() if kept.expires_at > now}
            if len(self._answers) >= MAX_CACHED_KEYS:
                self._answers.clear()
        self._answers[presented] = answer
