"""Fixtures for the budget tests: a priced model, keys, and spend recorded through the real recording path."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from tests.dashboard.conftest import (  # noqa: F401 - fixtures shared with the dashboard tests
    _fresh_cache,
    fast_passwords,
    key_admin,
    logged_in,
    nobody,
    nobody_web,
    viewer,
    viewer_web,
)
from together_dash.catalog.models import ModelInfo
from together_dash.catalog.pricing import invalidate_prices
from together_dash.keys.models import AppKey, TogetherKey
from together_dash.keys.services import create_app_key
from together_dash.traffic.entries import LogEntry
from together_dash.traffic.recording import RecordResult, record_entries

# $1 per million prompt tokens and $2 per million completion tokens: a million prompt tokens is $1.00.
PRICED = "meta-llama/Llama-3.3-70B-Instruct-Turbo"
OTHER = "Qwen/Qwen2.5-7B-Instruct-Turbo"
UNPRICED = "acme/private-finetune"  # in no catalog
MILLION = 1_000_000


@pytest.fixture
def catalog(db: None) -> None:
    for model in (PRICED, OTHER):
        ModelInfo.objects.create(model_id=model, pricing_input=Decimal("1"), pricing_output=Decimal("2"))
    invalidate_prices()


def upstream(name: str, project: str = "") -> TogetherKey:
    key = TogetherKey.create(name, f"tk-{name}-{secrets.token_hex(12)}")
    if project:
        TogetherKey.objects.filter(pk=key.pk).update(project_name=project)
        key.refresh_from_db()
    return key


def app_key(name: str, key: TogetherKey) -> AppKey:
    created, _secret = create_app_key(name, upstream=key)
    return created


def spend(
    dollars: str,
    *,
    key: TogetherKey | None = None,
    app: AppKey | None = None,
    model: str = PRICED,
    at: datetime | None = None,
) -> RecordResult:
    """One successful request costing `dollars` at the catalog's $1 per million prompt tokens."""
    tokens = int(Decimal(dollars) * MILLION)
    entry = LogEntry(
        created_at=at or timezone.now(),
        endpoint="/v1/chat/completions",
        upstream_key_id=key.pk if key else None,
        app_key_id=app.pk if app else None,
        model_requested=model,
        status_code=200,
        latency_ms=50.0,
        prompt_tokens=tokens,
        completion_tokens=0,
        total_tokens=tokens,
    )
    return record_entries([entry])


def ago(**delta: float) -> datetime:
    return timezone.now() - timedelta(**delta)
