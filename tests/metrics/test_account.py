"""The account's series: values equal to what the rollups say, counters that never go down, bounded labels."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from tests.metrics.conftest import Exposition, scrape
from together_dash.alerts.kinds import Kind
from together_dash.alerts.models import AlertRule
from together_dash.catalog.models import ModelInfo
from together_dash.catalog.pricing import invalidate_prices
from together_dash.jobs.models import BatchJob, FineTuneJob
from together_dash.keys.models import RateLimitSnapshot, TogetherKey
from together_dash.metrics.account import account_families
from together_dash.pollers.models import PollerHeartbeat
from together_dash.traffic.entries import LogEntry
from together_dash.traffic.models import UsageMinute
from together_dash.traffic.recording import record_entries
from together_dash.traffic.retention import prune
from together_dash.traffic.rollups import usage_totals

pytestmark = pytest.mark.django_db

LLAMA = "meta-llama/Llama-3.3-70B-Instruct-Turbo"
QWEN = "Qwen/Qwen2.5-7B-Instruct-Turbo"
MAIN_SECRET = "tgp_main_" + "s3cr3t" * 6
EVER = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))


@pytest.fixture
def main(db: None) -> TogetherKey:
    return TogetherKey.create("prod-main", MAIN_SECRET)


@pytest.fixture
def backup(db: None) -> TogetherKey:
    return TogetherKey.create("prod-backup", "tgp_backup_" + "k" * 30)


def ok(key: TogetherKey | None, model: str = LLAMA, at: datetime | None = None, **fields: object) -> LogEntry:
    values = {
        "created_at": at or datetime.now(UTC), "endpoint": "/v1/chat/completions",
        "upstream_key_id": key.id if key else None, "model_requested": model, "status_code": 200,
        "latency_ms": 120.0, "prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15,
    }
    return LogEntry(**{**values, **fields})


def failed(key: TogetherKey | None, status: int, category: str, kind: str, **fields: object) -> LogEntry:
    values = {"status_code": status, "category": category, "kind": kind, "prompt_tokens": None,
              "completion_tokens": None, "total_tokens": None}
    return ok(key, **{**values, **fields})


def totals(exposition: Exposition, model: str | None = None, key: str | None = None) -> dict[str, float]:
    labels = {name: value for name, value in (("model", model), ("upstream_key", key)) if value}
    return {
        "requests": exposition.total("together_dash_requests_total", **labels),
        "prompt": exposition.total("together_dash_tokens_total", type="prompt", **labels),
        "completion": exposition.total("together_dash_tokens_total", type="completion", **labels),
        "cost": exposition.total("together_dash_cost_usd_total", **labels),
    }


def from_rollups(key: TogetherKey | None = None, model: str | None = None) -> dict[str, float]:
    counts = usage_totals(*EVER, key_id=key.id if key else None, model=model)
    return {"requests": counts.requests, "prompt": counts.prompt_tokens,
            "completion": counts.completion_tokens, "cost": float(counts.cost_usd)}


# ---- traffic -----------------------------------------------------------------------------------------

def test_traffic_counters_equal_the_rollups_per_model_and_key(
    client: Client, metrics_token: str, main: TogetherKey, backup: TogetherKey
) -> None:
    ModelInfo.objects.create(model_id=LLAMA, pricing_input=Decimal("0.88"), pricing_output=Decimal("0.88"))
    invalidate_prices()
    record_entries([
        *(ok(main) for _ in range(3)),
        ok(main, QWEN, prompt_tokens=200, completion_tokens=40),
        failed(main, 429, "rate_limit", "request_rate_limited"),
        failed(main, 429, "rate_limit", "token_rate_limited", model_requested=QWEN),
        ok(backup),
        failed(backup, 402, "billing", "insufficient_credits"),
        failed(backup, 402, "billing", "insufficient_credits"),
        ok(None, model="", endpoint="/v1/models", method="GET", prompt_tokens=None, completion_tokens=None),
    ])

    exposition = scrape(client)

    assert totals(exposition) == pytest.approx(from_rollups())
    for key in (main, backup):
        for model in (LLAMA, QWEN):
            assert totals(exposition, model, key.name) == pytest.approx(from_rollups(key, model))
    assert exposition.value("together_dash_requests_total", model=LLAMA, upstream_key="prod-main") == 4
    assert exposition.value("together_dash_requests_total", model="(none)", upstream_key="(none)") == 1
    assert totals(exposition, LLAMA)["cost"] == pytest.approx(4 * 15 * 0.88 / 1e6)  # the 4 that succeeded
    errors = {
        (labels["category"], labels["kind"], labels["model"], labels["upstream_key"]): value
        for labels, value in exposition.samples["together_dash_errors_total"]
    }
    assert errors == {
        ("rate_limit", "request_rate_limited", LLAMA, "prod-main"): 1,
        ("rate_limit", "token_rate_limited", QWEN, "prod-main"): 1,
        ("billing", "insufficient_credits", LLAMA, "prod-backup"): 2,
    }
    assert exposition.total("together_dash_errors_total") == usage_totals(*EVER).errors


def test_the_counters_stay_put_when_retention_prunes_old_logs_and_minutes(
    client: Client, metrics_token: str, main: TogetherKey
) -> None:
    now = datetime.now(UTC)
    record_entries([
        *(ok(main, at=now - timedelta(days=40)) for _ in range(5)),
        failed(main, 500, "server", "model_overloaded", created_at=now - timedelta(days=40)),
        *(ok(main, at=now - timedelta(days=5)) for _ in range(3)),
        ok(main),
    ])
    before = scrape(client)

    result = prune(now)

    assert result.request_logs == 6 and result.minute_rollups >= 2
    assert not UsageMinute.objects.filter(bucket__lt=now - timedelta(days=4)).exists()
    after = scrape(client)
    for name in ("together_dash_requests_total", "together_dash_tokens_total", "together_dash_errors_total"):
        assert after.samples[name] == before.samples[name]
    assert after.value("together_dash_requests_total", model=LLAMA, upstream_key="prod-main") == 10


def test_the_model_label_is_capped_and_later_models_count_as_other(
    client: Client, metrics_token: str, settings: object, main: TogetherKey
) -> None:
    settings.METRICS_MAX_MODELS = 2
    day = datetime.now(UTC) - timedelta(days=3)
    record_entries([
        ok(main, "first/model", at=day),
        ok(main, "second/model", at=day + timedelta(days=1)),
        *(ok(main, "third/model", at=day + timedelta(days=2)) for _ in range(5)),
    ])
    first = scrape(client)

    named = first.label_values("together_dash_requests_total", "model")
    assert named == {"first/model", "second/model", "other"}
    assert first.value("together_dash_requests_total", model="other", upstream_key="prod-main") == 5

    # A new model busier than all the others still counts as "other": no model moves between series.
    record_entries([
        *(ok(main, "fourth/model") for _ in range(50)),
        failed(main, 404, "validation", "model_not_found", model_requested="fourth/model"),
    ])
    second = scrape(client)

    assert second.value("together_dash_requests_total", model="first/model", upstream_key="prod-main") == 1
    assert second.value("together_dash_requests_total", model="other", upstream_key="prod-main") == 56
    assert second.label_values("together_dash_errors_total", "model") == {"other"}
    assert second.total("together_dash_requests_total") == usage_totals(*EVER).requests


def test_label_values_name_keys_and_never_show_a_secret(
    client: Client, metrics_token: str, main: TogetherKey
) -> None:
    record_entries([ok(main), failed(main, 401, "auth", "invalid_api_key")])
    RateLimitSnapshot.objects.create(key=main, model="", taken_at=datetime.now(UTC), source="probe",
                                     request_limit=100, request_remaining=50, headroom_pct=50)

    text = scrape(client).text

    assert 'upstream_key="prod-main"' in text
    for secret in (MAIN_SECRET, main.fingerprint, main.secret_encrypted):
        assert secret not in text


# ---- rate limits, jobs, pollers, alerts --------------------------------------------------------------

def test_headroom_is_the_latest_snapshot_of_each_key_and_model(
    client: Client, metrics_token: str, main: TogetherKey, backup: TogetherKey
) -> None:
    now = datetime.now(UTC)
    record_entries([ok(main)])

    def snapshot(key: TogetherKey, model: str, minutes_ago: float, headroom: float) -> None:
        RateLimitSnapshot.objects.create(key=key, model=model, taken_at=now - timedelta(minutes=minutes_ago),
                                         source="proxy" if model else "probe", headroom_pct=headroom)

    snapshot(main, "", 5, 80)
    snapshot(main, "", 1, 40)  # the newest of the key's own limit
    snapshot(main, LLAMA, 2, 25)
    snapshot(main, "never/used-model", 2, 60)
    snapshot(main, "another/unused-model", 3, 30)  # both fold into "other": the tighter one shows
    snapshot(backup, LLAMA, 90, 5)  # older than an hour: not current any more

    exposition = scrape(client)

    ratios = {(labels["upstream_key"], labels["model"]): value
              for labels, value in exposition.samples["together_dash_ratelimit_remaining_ratio"]}
    assert ratios == {("prod-main", "(all)"): 0.4, ("prod-main", LLAMA): 0.25, ("prod-main", "other"): 0.3}


def test_jobs_are_counted_by_status_with_every_known_status_present(
    client: Client, metrics_token: str
) -> None:
    for number, status in enumerate(["running", "running", "completed", "from_the_future"]):
        FineTuneJob.objects.create(job_id=f"ft-{number}", status=status)
    BatchJob.objects.create(batch_id="batch-1", status="IN_PROGRESS")
    BatchJob.objects.create(batch_id="batch-2", status="FAILED")

    exposition = scrape(client)

    assert exposition.value("together_dash_finetune_jobs", status="running") == 2
    assert exposition.value("together_dash_finetune_jobs", status="completed") == 1
    assert exposition.value("together_dash_finetune_jobs", status="pending") == 0
    assert exposition.value("together_dash_finetune_jobs", status="other") == 1
    assert exposition.value("together_dash_batch_jobs", status="IN_PROGRESS") == 1
    assert exposition.value("together_dash_batch_jobs", status="FAILED") == 1
    assert exposition.value("together_dash_batch_jobs", status="VALIDATING") == 0
    assert len(exposition.samples["together_dash_batch_jobs"]) == 7


def test_pollers_report_seconds_since_their_last_success(client: Client, metrics_token: str) -> None:
    now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    PollerHeartbeat.objects.create(
        name="poll_models", interval_seconds=300, created_at=now - timedelta(days=1),
        last_success=now - timedelta(seconds=90),
    )
    PollerHeartbeat.objects.create(name="poll_batches", interval_seconds=60,
                                   created_at=now - timedelta(minutes=5))

    with time_machine.travel(now, tick=False):
        exposition = scrape(client)

    assert exposition.value("together_dash_poller_last_success_seconds", poller="poll_models") == 90
    assert exposition.value("together_dash_poller_last_success_seconds", poller="poll_batches") == 300
    assert exposition.value("together_dash_poller_interval_seconds", poller="poll_models") == 300


def test_a_402_alert_shows_as_billing_exhausted_for_its_key_only(
    client: Client, metrics_token: str, main: TogetherKey, backup: TogetherKey,
    django_capture_on_commit_callbacks: object,
) -> None:
    AlertRule.ensure_defaults()
    with django_capture_on_commit_callbacks(execute=True):  # type: ignore[operator]
        record_entries([failed(backup, 402, "billing", "insufficient_credits"), ok(main)])

    exposition = scrape(client)

    assert exposition.value("together_dash_billing_exhausted", upstream_key="prod-backup") == 1
    assert exposition.value("together_dash_billing_exhausted", upstream_key="prod-main") == 0
    assert exposition.value("together_dash_alerts_firing", kind=Kind.BILLING) == 1
    assert exposition.value("together_dash_alerts_firing", kind=Kind.POLLER_STALE) == 0
    assert exposition.label_values("together_dash_alerts_firing", "kind") == set(Kind.values)

    with django_capture_on_commit_callbacks(execute=True):  # type: ignore[operator]
        record_entries([ok(backup)])  # credits are back: the alert resolves

    assert scrape(client).value("together_dash_billing_exhausted", upstream_key="prod-backup") == 0


# ---- cost of a scrape --------------------------------------------------------------------------------

def test_a_scrape_makes_the_same_few_queries_however_much_is_recorded(main: TogetherKey) -> None:
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            list(account_families())
        return len(captured)

    record_entries([ok(main)])
    RateLimitSnapshot.objects.create(key=main, model=LLAMA, taken_at=datetime.now(UTC), source="proxy",
                                     headroom_pct=50)
    few = queries()
    now = datetime.now(UTC)
    record_entries([
        ok(main, f"model/{n % 30}", at=now - timedelta(days=n % 60), category="server" if n % 7 else "",
           kind="model_overloaded" if n % 7 else "")
        for n in range(2000)
    ])
    for n in range(40):
        RateLimitSnapshot.objects.create(key=main, model=f"model/{n}", taken_at=now - timedelta(seconds=n),
                                         source="proxy", headroom_pct=n)

    assert queries() == few <= 12
