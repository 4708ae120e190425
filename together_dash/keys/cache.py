"""A version number for key state, so caches of keys (the proxy's) can drop stale entries at once.

Every rotate, revoke or edit of a key bumps it after the transaction commits. A reader compares the
number with the one it saw when it filled its cache and refills when it moved (compare for inequality:
an evicted counter starts again at 1). The number lives in Django's cache: per process with the default
locmem cache (enough for `make run`, where the dashboard and the proxy share one process), shared by
every process when CACHE_URL points at Redis. The proxy's key cache polls it (proxy/auth.py).
"""
from __future__ import annotations

from django.core.cache import cache
from django.db import transaction

KEY_CACHE_VERSION = "keys:cache-version"


def key_cache_version() -> int:
    """The current shared key-state version; 0 until the first change."""
    return int(cache.get(KEY_CACHE_VERSION) or 0)


def bump_key_cache_version() -> int:
    """Move the version on, now; returns the new value."""
    try:
        return int(cache.incr(KEY_CACHE_VERSION))
    except ValueError:  # not set yet, or evicted
        # add() so two processes starting the counter at once do not both win.
        if cache.add(KEY_CACHE_VERSION, 1, timeout=None):
            return 1
        return int(cache.incr(KEY_CACHE_VERSION))


def bump_key_cache_version_on_commit() -> None:
    """Bump once the current transaction commits, so readers never refill with the old rows."""
    transaction.on_commit(bump_key_cache_version)

