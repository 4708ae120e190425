"""The periodic rules: each fires for what it watches and resolves when that clears."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core.cache import cache

from tests.alerts.conftest import Inbox
from tests.alerts.helpers import MODEL, payment_required, success
from together_dash.alerts.delivery import deliver_pending
from together_dash.alerts.kinds import Kind
from together_dash.alerts.models import Alert, AlertRule
from together_dash.alerts.tasks import evaluate_alerts_now
from together_dash.catalog.models import ModelInfo
from together_dash.jobs.models import BatchJob, FineTuneJob
from together_dash.keys.models import RateLimitSnapshot, TogetherKey
from together_dash.pollers.models import PollerHeartbeat
from together_dash.traffic.recording import record_entries

pytestmark = pytest.mark.django_db


def firing(kind: str) -> list[str]:
    return sorted(
        Alert.objects.filter(rule__kind=kind, state=Alert.State.FIRING).values_list("subject", flat=True)
    )


def test_a_stale_poller_fires_then_resolves_with_a_notice(inbox: Inbox, rules: None) -> None:
    beat = PollerHeartbeat.objects.create(
        name="poll_models", interval_seconds=60, created_at=datetime.now(UTC) - timedelta(minutes=5)
    )
    evaluate_alerts_now()
    assert firing(Kind.POLLER_STALE) == ["poller:poll_models"]

    PollerHeartbeat.objects.filter(pk=beat.pk).update(last_success=datetime.now(UTC))
    evaluate_alerts_now()
    deliver_pending()

    assert firing(Kind.POLLER_STALE) == []
    assert inbox.subjects == [
        "[together-dash] Poller stale: poller poll_models",
        "[together-dash] RESOLVED: Poller stale: poller poll_models",
    ]
    assert "check that the Celery worker and beat are running" in inbox.text(0)
    assert "https://dash.example.com/alerts/" in inbox.text(0)


def test_an_invalid_key_fires_from_its_health_check(inbox: Inbox, key: TogetherKey) -> None:
    TogetherKey.objects.filter(pk=key.pk).update(
        health=TogetherKey.Health.INVALID, health_detail="Invalid API key"
    )
    evaluate_alerts_now()
    deliver_pending()

    assert firing(Kind.KEY_INVALID) == [f"key:{key.pk}"]
    assert "Key invalid (HTTP 401): key prod-main" in inbox.subjects[0]
    assert f"https://dash.example.com/dashboard/keys/{key.pk}/" in inbox.text()


def test_a_failed_batch_fires_once_and_ages_out_silently(inbox: Inbox, key: TogetherKey) -> None:
    BatchJob.objects.create(
        batch_id="batch-1",
        upstream_key=key,
        status="FAILED",
        error="bad input",
        status_changed_at=datetime.now(UTC),
    )
    evaluate_alerts_now()
    evaluate_alerts_now()
    with time_machine.travel(datetime.now(UTC) + timedelta(days=2)):
        evaluate_alerts_now()
    deliver_pending()

    assert inbox.subjects == ["[together-dash] Batch failed or expired: batch batch-1"]
    assert Alert.objects.get(rule__kind=Kind.BATCH_FAILED).state == Alert.State.RESOLVED


def test_a_stuck_fine_tune_fires(rules: None) -> None:
    FineTuneJob.objects.create(
        job_id="ft-1", status="queued", status_changed_at=datetime.now(UTC) - timedelta(hours=2)
    )
    FineTuneJob.objects.create(job_id="ft-2", status="queued", status_changed_at=datetime.now(UTC))
    FineTuneJob.objects.create(job_id="ft-3", status="error", status_changed_at=datetime.now(UTC))
    evaluate_alerts_now()

    assert firing(Kind.FINETUNE_STUCK) == ["finetune:ft-1"]
    assert firing(Kind.FINETUNE_FAILED) == ["finetune:ft-3"]


def test_a_removed_model_fires_only_when_our_traffic_used_it(rules: None) -> None:
    now = datetime.now(UTC)
    ModelInfo.objects.create(
        model_id=MODEL, state="removed", removed_at=now, last_used_at=now, successor="new/model"
    )
    ModelInfo.objects.create(model_id="old/unused", state="removed", removed_at=now)
    evaluate_alerts_now()

    assert firing(Kind.MODEL_REMOVED) == [f"model:{MODEL}"]
    assert "switch to new/model" in Alert.objects.get(rule__kind=Kind.MODEL_REMOVED).context["fix"]


def test_low_headroom_fires_only_when_it_lasted_the_whole_window(key: TogetherKey) -> None:
    now = datetime.now(UTC)
    for minutes, pct in ((1, 5.0), (2, 3.0)):
        RateLimitSnapshot.objects.create(
            key=key, model="", taken_at=now - timedelta(minutes=minutes), source="probe", headroom_pct=pct
        )
    evaluate_alerts_now()
    assert firing(Kind.HEADROOM) == [f"key:{key.pk}:"]

    RateLimitSnapshot.objects.create(key=key, model="", taken_at=now, source="probe", headroom_pct=60.0)
    evaluate_alerts_now()
    assert firing(Kind.HEADROOM) == []


def test_an_error_rate_above_the_threshold_fires_for_its_category(key: TogetherKey) -> None:
    overloaded = [success(key.pk) for _ in range(30)]
    for entry in overloaded:
        entry.status_code, entry.category, entry.kind = 500, "server", "model_overloaded"
    record_entries(
        [success(key.pk) for _ in range(60)] + overloaded + [payment_required(key.pk) for _ in range(10)]
    )
    evaluate_alerts_now()

    # 30% server errors fire; 10% billing errors are below 20%, and billing has its own alert anyway.
    assert firing(Kind.ERROR_RATE) == ["category:server"]
    assert "30.0% of 100 requests" in Alert.objects.get(rule__kind=Kind.ERROR_RATE).context["detail"]


def test_a_402_storm_does_not_also_send_an_error_rate_email(inbox: Inbox, key: TogetherKey) -> None:
    record_entries([payment_required(key.pk) for _ in range(100)])
    evaluate_alerts_now()
    deliver_pending()

    assert firing(Kind.ERROR_RATE) == []
    assert len(inbox.messages) == 1


def test_dropped_proxy_logs_fire_then_clear_after_the_window(rules: None) -> None:
    cache.set("proxy:logs_dropped", 0, timeout=None)
    evaluate_alerts_now()
    assert firing(Kind.LOGS_DROPPED) == []

    cache.incr("proxy:logs_dropped", 25)
    evaluate_alerts_now()
    assert firing(Kind.LOGS_DROPPED) == ["proxy"]
    assert "dropped 25 request logs" in Alert.objects.get(rule__kind=Kind.LOGS_DROPPED).context["detail"]

    with time_machine.travel(datetime.now(UTC) + timedelta(minutes=11)):
        evaluate_alerts_now()
    assert firing(Kind.LOGS_DROPPED) == []


def test_a_402_the_hook_missed_is_caught_by_the_periodic_evaluation(inbox: Inbox, key: TogetherKey) -> None:
    # Recorded without the after-commit hook running (no captured callbacks): as if the process died.
    record_entries([payment_required(key.pk) for _ in range(3)])
    evaluate_alerts_now()
    evaluate_alerts_now()
    deliver_pending()

    assert inbox.subjects == ["[together-dash] Credits exhausted on key prod-main (HTTP 402)"]
    assert "traffic (backstop)" in inbox.text()


def test_a_disabled_rule_does_not_fire(rules: None) -> None:
    AlertRule.objects.filter(kind=Kind.POLLER_STALE).update(enabled=False)
    PollerHeartbeat.objects.create(
        name="poll_models", interval_seconds=60, created_at=datetime.now(UTC) - timedelta(minutes=5)
    )
    evaluate_alerts_now()

    assert firing(Kind.POLLER_STALE) == []


def test_an_unpriced_model_in_use_fires_and_resolves_once_its_requests_are_costed(
    inbox: Inbox, key: TogetherKey
) -> None:
    from decimal import Decimal

    from together_dash.traffic.backfill import backfill_costs

    ModelInfo.objects.create(model_id=MODEL)  # in the catalog, without a price
    ModelInfo.objects.create(model_id="org/priced", pricing_input=Decimal("1"), pricing_output=Decimal("1"))
    record_entries([success(key.pk), success(key.pk)])
    record_entries([replace(success(key.pk), model_requested="org/priced")])
    evaluate_alerts_now()
    deliver_pending()

    assert firing(Kind.UNPRICED_MODEL) == [f"model:{MODEL}"]
    alert = Alert.objects.get(rule__kind=Kind.UNPRICED_MODEL)
    assert "2 requests within 60 minutes have no cost" in alert.context["detail"]
    assert [" ".join(subject.split()) for subject in inbox.subjects] == [  # a long header is folded
        f"[together-dash] Unpriced model in use: model {MODEL}"
    ]

    prices = {"pricing_input": Decimal("0.88"), "pricing_output": Decimal("0.88")}
    ModelInfo.objects.filter(model_id=MODEL).update(**prices)
    ModelInfo.objects.get(model_id=MODEL).save()
    backfill_costs()
    evaluate_alerts_now()

    assert firing(Kind.UNPRICED_MODEL) == []
