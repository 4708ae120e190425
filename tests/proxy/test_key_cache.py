"""The proxy's key cache: made-up keys never reach the key thread, and it evicts one key at a time."""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from together_dash.proxy import auth
from together_dash.proxy.auth import Credential, CredentialCache, KeyIndex, KeyRecord, Refusal

REAL_PREFIX = "a1b2c3d4"
REAL_KEY = f"tdk_{REAL_PREFIX}_{secrets.token_urlsafe(32)}"


class FakeDatabase:
    """What the key thread would read: slow on purpose, and counting every query it gets."""

    def __init__(self, prefixes: set[str], query_seconds: float = 0.02) -> None:
        self.prefixes = set(prefixes)
        self.query_seconds = query_seconds
        self.queries: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.pause = threading.Event()

    def load_index(self) -> KeyIndex:
        self._query("index")
        return KeyIndex(auth.time.monotonic(), frozenset(self.prefixes), {})

    def load_key(self, prefix: str) -> KeyRecord:
        self._query(prefix)
        if prefix not in self.prefixes:
            return KeyRecord(lambda presented: False, failure=auth.unknown_key())
        credential = Credential(upstream_secret="up", key_fingerprint="fp", app_key_name=prefix)
        return KeyRecord(lambda presented: presented in (REAL_KEY, f"tdk_{prefix}_x"), credential=credential)

    def _query(self, what: str) -> None:
        with self.lock:
            self.queries[what] += 1
        threading.Event().wait(self.query_seconds)


def cache_on(database: FakeDatabase, executor: ThreadPoolExecutor, **options: object) -> CredentialCache:
    return CredentialCache(executor, ttl=60.0, read_version=None, load_key=database.load_key,
                           load_index=database.load_index, **options)


async def refused(cache: CredentialCache, presented: str) -> bool:
    try:
        await cache.get(presented)
    except Refusal as refusal:
        return refusal.status == 401
    return False


def test_a_flood_of_made_up_keys_costs_no_key_lookup_and_a_real_key_still_resolves() -> None:
    database = FakeDatabase({REAL_PREFIX})

    async def scenario() -> tuple[list[bool], Credential]:
        with ThreadPoolExecutor(max_workers=1) as executor:
            cache = cache_on(database, executor)
            flood = [f"tdk_{secrets.token_hex(4)}_{secrets.token_urlsafe(32)}" for _ in range(300)]
            flood += [secrets.token_urlsafe(40) for _ in range(300)]  # not even shaped like an app key
            flood += [f"tdk_{REAL_PREFIX}_{secrets.token_urlsafe(32)}" for _ in range(300)]  # wrong secret
            results = await asyncio.gather(*(refused(cache, token) for token in flood), cache.get(REAL_KEY))
            return list(results[:-1]), results[-1]

    refusals, credential = asyncio.run(scenario())

    assert all(refusals)
    assert credential.app_key_name == REAL_PREFIX
    # The real key was looked up once; the 900 made-up ones cost one or two index loads, no lookup each.
    assert database.queries[REAL_PREFIX] == 1
    assert set(database.queries) == {REAL_PREFIX, "index"}
    assert database.queries["index"] <= 2


def test_a_key_created_after_the_index_was_loaded_is_found_on_its_first_request() -> None:
    database = FakeDatabase(set(), query_seconds=0)

    async def scenario() -> Credential:
        with ThreadPoolExecutor(max_workers=1) as executor:
            cache = cache_on(database, executor)
            assert await refused(cache, REAL_KEY)  # no such key yet: loads the index
            database.prefixes.add(REAL_PREFIX)  # an admin creates it now
            return await cache.get(REAL_KEY)

    assert asyncio.run(scenario()).app_key_name == REAL_PREFIX
    assert database.queries["index"] == 2


def test_a_full_cache_evicts_its_oldest_key_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "MAX_CACHED_KEYS", 3)
    prefixes = [f"{index:08x}" for index in range(4)]
    database = FakeDatabase(set(prefixes), query_seconds=0)

    async def scenario() -> None:
        with ThreadPoolExecutor(max_workers=1) as executor:
            cache = cache_on(database, executor)
            for prefix in prefixes:
                await cache.get(f"tdk_{prefix}_x")
            for prefix in prefixes[1:]:
                await cache.get(f"tdk_{prefix}_x")  # still cached: no new lookup
            await cache.get(f"tdk_{prefixes[0]}_x")  # the one that was evicted

    asyncio.run(scenario())

    assert [database.queries[prefix] for prefix in prefixes] == [2, 1, 1, 1]
