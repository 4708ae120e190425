"""Fixtures for the dashboard tests: users in each role, and data seeded through the real services."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, User
from django.core.cache import cache
from django.test import Client
from django.utils import timezone

from together_dash.catalog.models import ModelInfo
from together_dash.catalog.pricing import invalidate_prices
from together_dash.core.roles import KEY_ADMIN_GROUP, VIEWER_GROUP
from together_dash.jobs.models import FineTuneJob
from together_dash.keys.models import RateLimitSnapshot, TogetherKey
from together_dash.traffic.entries import LogEntry
from together_dash.traffic.recording import record_entries

PASSWORD = "correct horse battery staple"
LLAMA = "meta-llama/Llama-3.3-70B-Instruct-Turbo"
QWEN = "Qwen/Qwen2.5-7B-Instruct-Turbo"
# kind -> (HTTP status, category), as the classifier files them.
KINDS: dict[str, tuple[int, str]] = {
    "request_rate_limited": (429, "rate_limit"),
    "insufficient_credits": (402, "billing"),
    "model_overloaded": (500, "server"),
    "model_not_found": (404, "validation"),
    "invalid_api_key": (401, "auth"),
    "timeout": (0, "network"),
}


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    """Login throttles and the proxy's dropped-log counter live in the cache: no test sees another's."""
    cache.clear()
    invalidate_prices()
    yield
    cache.clear()


@pytest.fixture
def fast_passwords(settings: object) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def make_user(username: str, group: str | None) -> User:
    user = User.objects.create_user(username=username, password=PASSWORD)
    if group:
        user.groups.add(Group.objects.get_or_create(name=group)[0])
    return user


@pytest.fixture
def viewer(db: None, fast_passwords: None) -> User:
    return make_user("vic-viewer", VIEWER_GROUP)


@pytest.fixture
def key_admin(db: None, fast_passwords: None) -> User:
    return make_user("kim-admin", KEY_ADMIN_GROUP)


@pytest.fixture
def nobody(db: None, fast_passwords: None) -> User:
    """Logged in, but in neither role."""
    return make_user("nora-norole", None)


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def viewer_web(viewer: User) -> Client:
    return logged_in(viewer)


@pytest.fixture
def nobody_web(nobody: User) -> Client:
    return logged_in(nobody)


class Seed:
    """Writes data the way production does: request logs through record_entries (so error groups and
    rollups agree with them), jobs and snapshots as the pollers store them."""

    def __init__(self) -> None:
        self.now = timezone.now()

    def key(self, name: str = "prod") -> TogetherKey:
        return TogetherKey.create(name, secrets.token_urlsafe(30))

    def entry(
        self, key: TogetherKey | None, model: str, ago: timedelta, kind: str = "", **fields: object
    ) -> LogEntry:
        status, category = KINDS[kind] if kind else (200, "")
        values: dict[str, object] = {
            "created_at": self.now - ago,
            "endpoint": "/v1/chat/completions",
            "upstream_key_id": key.id if key else None,
            "model_requested": model,
            "status_code": status or None,
            "latency_ms": 240.0,
            "category": category,
            "kind": kind,
            "error_message": f"simulated {kind}" if kind else "",
            "prompt_tokens": None if kind else 100,
            "completion_tokens": None if kind else 20,
            "total_tokens": None if kind else 120,
        }
        return LogEntry(**{**values, **fields})

    def logs(
        self,
        key: TogetherKey | None,
        model: str,
        ago: timedelta,
        count: int,
        kind: str = "",
        **fields: object,
    ) -> None:
        # A millisecond apart: distinct, ordered, and all in the same minute bucket.
        record_entries(
            [self.entry(key, model, ago - timedelta(milliseconds=i), kind, **fields) for i in range(count)]
        )

    def model(self, model_id: str, **fields: object) -> ModelInfo:
        values: dict[str, object] = {
            "display_name": model_id.rsplit("/", 1)[-1],
            "type": "chat",
            "organization": model_id.split("/")[0],
            "context_length": 131072,
            "pricing_input": "0.88",
            "pricing_output": "0.88",
        }
        model = ModelInfo.objects.create(model_id=model_id, **{**values, **fields})
        invalidate_prices()
        return model

    def finetune(
        self, job_id: str, status: str, steps: tuple[int, int] | None, **fields: object
    ) -> FineTuneJob:
        done, total = steps if steps else (None, None)
        progress = done / total * 100 if steps else None
        values: dict[str, object] = {
            "status": status,
            "base_model": LLAMA,
            "steps_completed": done,
            "total_steps": total,
            "progress_pct": progress,
            "created_at": self.now - timedelta(hours=2),
            "status_changed_at": self.now - timedelta(minutes=30),
        }
        return FineTuneJob.objects.create(job_id=job_id, **{**values, **fields})

    def snapshot(
        self,
        key: TogetherKey,
        model: str,
        headroom: float,
        ago: timedelta,
        source: str = RateLimitSnapshot.Source.PROBE,
    ) -> RateLimitSnapshot:
        return RateLimitSnapshot.objects.create(
            key=key,
            model=model,
            taken_at=self.now - ago,
            source=source,
            request_limit=100.0,
            request_remaining=headroom,
            headroom_pct=headroom,
        )


@pytest.fixture
def seed(db: None) -> Seed:
    return Seed()
