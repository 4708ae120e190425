"""/api/usage and the overview read the rollups by one rule, so they show the same totals for a range."""
from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django.test import Client

from together_dash.core.roles import VIEWER_GROUP
from together_dash.dashboard import queries
from together_dash.dashboard.ranges import PRESETS, Range, parse_range
from together_dash.dashboard.views.common import count
from together_dash.keys.models import TogetherKey
from together_dash.traffic import retention
from together_dash.traffic.entries import LogEntry
from together_dash.traffic.recording import record_entries

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 3, 10, 12, 34, 56, tzinfo=UTC)  # ragged: neither on the minute nor on the hour
MODEL = "meta-llama/Llama-3.3-70B-Instruct-Turbo"
# Custom ranges as the pages send them (to the minute), each with ragged edges.
CUSTOM = [
    (timedelta(minutes=100), timedelta(minutes=7)),  # minutes only
    (timedelta(hours=50, minutes=10), timedelta(hours=50, minutes=2)),  # inside one hour
    (timedelta(hours=37, minutes=17), timedelta(hours=11, minutes=41)),  # across midnight, no whole day
    (timedelta(days=2, hours=5, minutes=17), timedelta(minutes=13)),  # a whole day in the middle
    (timedelta(days=20, hours=3, minutes=7), timedelta(days=10, hours=1, minutes=1)),  # minutes pruned
    (timedelta(days=29, hours=23, minutes=59), timedelta(minutes=1)),  # nearly the longest custom range
]


@pytest.fixture(autouse=True)
def frozen() -> Iterator[None]:
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def stamps() -> list[datetime]:
    """A request every 37 min 13 s over 32 days (every fifth an error), and some around each range's edges."""
    key = TogetherKey.create("main", "tgp_" + "a" * 40)
    times = [NOW - timedelta(seconds=n * 2233 + 17) for n in range(32 * 24 * 60 * 60 // 2233)]
    for rng in ranges():  # in the edge minutes, on either side of the edge
        times += [rng.start - timedelta(seconds=1), rng.start, rng.start + timedelta(seconds=30)]
        times += [rng.end - timedelta(seconds=1), rng.end + timedelta(seconds=1)]
    entries = [entry(key, at, index) for index, at in enumerate(times)]
    for start in range(0, len(entries), 500):
        record_entries(entries[start:start + 500])
    retention.prune(now=NOW)  # the minute rollups of older days are gone, as in production
    return times


def entry(key: TogetherKey, at: datetime, index: int) -> LogEntry:
    values = {"status_code": 200, "total_tokens": 10 + index % 7}
    if index % 5 == 0:
        values = {"status_code": 429, "category": "rate_limit", "kind": "x", "total_tokens": None}
    return LogEntry(created_at=at, endpoint="/v1/chat/completions", upstream_key_id=key.id,
                    model_requested=MODEL, latency_ms=100.0 + index % 300, **values)


@pytest.fixture
def token() -> str:
    out = io.StringIO()
    call_command("create_api_token", "grafana", stdout=out, stderr=io.StringIO())
    return out.getvalue().strip()


@pytest.fixture
def viewer_web() -> Client:
    user = User.objects.create_user(username="vic-viewer", password="unused-password-1")  # noqa: S106
    user.groups.add(Group.objects.get_or_create(name=VIEWER_GROUP)[0])
    client = Client()
    client.force_login(user)
    return client


def ranges() -> list[Range]:
    presets = [Range(name, NOW - span, NOW) for name, span in PRESETS.items()]
    minute = NOW.replace(second=0)
    return presets + [Range("custom", minute - since, minute - until) for since, until in CUSTOM]


def api_usage(client: Client, token: str, rng: Range) -> dict:
    params = {"start": rng.start.isoformat(), "end": rng.end.isoformat()}
    response = client.get("/api/usage", params, HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200
    return response.json()


def minute_of(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def ceil_minute(moment: datetime) -> datetime:
    return moment if moment == minute_of(moment) else minute_of(moment) + timedelta(minutes=1)


def hour_of(moment: datetime) -> datetime:
    return minute_of(moment).replace(minute=0)


@pytest.mark.parametrize("rng", ranges(), ids=lambda rng: rng.name if not rng.is_custom else rng.query)
def test_the_api_and_the_overview_show_the_same_totals(
    client: Client, token: str, viewer_web: Client, stamps: list[datetime], rng: Range
) -> None:
    page_range = parse_range(rng.params())
    assert (page_range.start, page_range.end) == (rng.start, rng.end)

    totals = api_usage(client, token, rng)["totals"]
    shown = queries.compared_figures(page_range).current
    overview = viewer_web.get("/", rng.params())

    assert (totals["requests"], totals["errors"], totals["total_tokens"]) == (
        shown.requests, shown.errors, shown.total_tokens,
    )
    assert Decimal(totals["cost_usd"]) == shown.cost_usd
    assert totals["requests"] > 0
    cards = {card.name: card for card in overview.context["cards"]}
    assert cards["requests"].value == count(totals["requests"])


@pytest.mark.parametrize("rng", ranges(), ids=lambda rng: rng.name if not rng.is_custom else rng.query)
def test_totals_are_exact_to_the_minute_while_minute_rollups_are_kept(
    client: Client, token: str, stamps: list[datetime], rng: Range
) -> None:
    usage = api_usage(client, token, rng)
    kept_since = NOW - timedelta(days=settings.ROLLUP_MINUTE_RETENTION_DAYS)
    first, last = minute_of(rng.start), ceil_minute(rng.end)
    if first < kept_since:  # an edge whose minutes are pruned counts its whole hour
        first = first.replace(minute=0)
    if hour_of(rng.end) < kept_since:
        last = hour_of(rng.end - timedelta(microseconds=1)) + timedelta(hours=1)

    assert usage["totals"]["requests"] == sum(first <= at < last for at in stamps)
    assert sum(point["requests"] for point in usage["series"]) == usage["totals"]["requests"]
