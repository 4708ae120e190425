"""/billing/ in Debian's Chromium (Playwright): the chart of billed against observed draws the stored bill."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import User

from tests.billing.conftest import MODEL, Biller
from tests.dashboard.conftest import make_user
from tests.dashboard.test_browser import (  # noqa: F401 (fixtures)
    _policy_lets_playwright_wait,
    browser,
    live_url,
    page_for,
    shoot,
)
from together_dash.billing.reconciliation import reconcile
from together_dash.catalog.polling import poll_models
from together_dash.core.roles import VIEWER_GROUP
from together_dash.pollers.testing import add_key
from together_dash.traffic.entries import LogEntry
from together_dash.traffic.recording import record_entries

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def viewer(settings: Any) -> User:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    return make_user("vic-viewer", VIEWER_GROUP)


def test_the_chart_draws_billed_against_observed(page_for: Any, viewer: User, biller: Biller) -> None:  # noqa: F811
    key, secret = add_key("main")
    poll_models()
    called_at = datetime.now(UTC).replace(minute=10, second=0, microsecond=0) - timedelta(hours=3)
    biller.at(called_at)
    usage = biller.chat(secret)  # seen by the dashboard (recorded below, as the ingest API would)
    biller.chat(secret, content="and this one went around the dashboard " * 5)
    record_entries([LogEntry(
        created_at=called_at, endpoint="/v1/chat/completions", upstream_key_id=key.id, model_requested=MODEL,
        status_code=200, prompt_tokens=usage["prompt_tokens"], completion_tokens=usage["completion_tokens"],
        total_tokens=usage["total_tokens"], source="ingest",
    )])
    biller.poll(called_at + timedelta(hours=1))
    (row,) = reconcile(called_at, called_at + timedelta(hours=1), "hour").rows
    assert row.cause == "bypassed"

    page = page_for(viewer)
    page.goto("/billing/?range=24h&granularity=hour")
    page.wait_for_function("window.tdCharts && window.tdCharts.billing", timeout=15_000)

    drawn = page.evaluate(
        """() => window.tdCharts.billing.data.datasets.map((set, i) => ({
             name: set.name,
             total: set.data.reduce((a, b) => a + (b || 0), 0),
             bars: window.tdCharts.billing.getDatasetMeta(i).data.filter(bar => bar.height > 0).length,
           }))"""
    )
    assert [set["name"] for set in drawn] == ["billed", "observed"]
    billed, observed = drawn
    assert Decimal(str(billed["total"])).quantize(Decimal("0.000001")) == row.billed.cost.quantize(
        Decimal("0.000001")
    )
    assert Decimal(str(observed["total"])).quantize(Decimal("0.000001")) == row.observed.cost.quantize(
        Decimal("0.000001")
    )
    assert billed["bars"] == 1 and observed["bars"] == 1 and billed["total"] > observed["total"] > 0
    assert page.locator('tr[data-cause="bypassed"]').count() == 1
    assert "bypassed" in page.locator("#billing-rows").inner_text()
    shoot(page, "billing")
