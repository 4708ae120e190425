"""The app keys' hour rollup starts with the spend already logged: a budget added later counts it."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from together_dash.keys.models import TogetherKey
from together_dash.keys.services import create_app_key
from together_dash.pollers.testing import new_secret
from together_dash.traffic.models import AppKeySpendHour, RequestLog

pytestmark = pytest.mark.django_db(transaction=True)
MODEL = "meta-llama/Llama-3.3-70B-Instruct-Turbo"


def _migrate(*targets: tuple[str, str]) -> None:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(list(targets))


def _log(app_key_id: int, ago: timedelta, cost: str | None) -> RequestLog:
    return RequestLog(created_at=timezone.now() - ago, app_key_id=app_key_id, endpoint="/v1/chat/completions",
                      model_requested=MODEL, status_code=200, prompt_tokens=10, completion_tokens=5,
                      cost_usd=None if cost is None else Decimal(cost))


def test_the_migration_fills_this_and_last_months_hours_from_the_request_logs() -> None:
    TogetherKey.create(name="main", secret=new_secret())
    app_key, _ = create_app_key("web")
    _migrate(("traffic", "0006_unpriced_requests"))
    RequestLog.objects.bulk_create([
        _log(app_key.pk, timedelta(minutes=1), "0.25"),
        _log(app_key.pk, timedelta(minutes=2), "0.50"),
        _log(app_key.pk, timedelta(minutes=3), None),  # unpriced
        _log(app_key.pk, timedelta(days=70), "9"),  # older than last month: no budget reads it
    ])

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())

    rows = list(AppKeySpendHour.objects.all())
    assert sum(row.cost_usd for row in rows) == Decimal("0.75")
    assert sum(row.requests for row in rows) == 3 and sum(row.unpriced_requests for row in rows) == 1
    assert {row.app_key_id for row in rows} == {app_key.pk}
