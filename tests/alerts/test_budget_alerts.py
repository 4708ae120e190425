"""Budget thresholds and the spend anomaly rule, through the real channels: SMTP, Slack, webhook, PagerDuty.

Spend is recorded through the real recording path at the catalog's prices ($1 per million prompt tokens,
so a million tokens is $1.00); the rules run as the periodic evaluation runs them, and the outbox is
delivered to receivers listening on loopback.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine

from tests.alerts.conftest import Inbox
from tests.alerts.receivers import Receiver
from tests.alerts.test_channels import ROUTING_KEY, SLACK_PATH, WEBHOOK_SECRET
from together_dash.alerts.delivery import deliver_pending
from together_dash.alerts.models import Alert, AlertRule
from together_dash.alerts.services import add_channel
from together_dash.alerts.tasks import evaluate_alerts_now
from together_dash.budgets.models import Budget
from together_dash.catalog.models import ModelInfo
from together_dash.catalog.pricing import invalidate_prices
from together_dash.keys.models import TogetherKey
from together_dash.traffic.entries import LogEntry
from together_dash.traffic.recording import record_entries

pytestmark = pytest.mark.django_db
MODEL = "meta-llama/Llama-3.3-70B-Instruct-Turbo"
OTHER = "Qwen/Qwen2.5-7B-Instruct-Turbo"
NOON = datetime(2026, 4, 14, 12, 30, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _priced(db: None) -> None:
    for model in (MODEL, OTHER):
        ModelInfo.objects.create(model_id=model, pricing_input=Decimal("1"), pricing_output=Decimal("2"))
    invalidate_prices()


def spend(key: TogetherKey, dollars: str, at: datetime, model: str = MODEL) -> None:
    tokens = int(Decimal(dollars) * 1_000_000)
    record_entries([LogEntry(
        created_at=at, endpoint="/v1/chat/completions", upstream_key_id=key.pk, model_requested=model,
        status_code=200, latency_ms=40.0, prompt_tokens=tokens, completion_tokens=0, total_tokens=tokens,
    )])


def channels_for(receivers: dict[str, Receiver], kind: str) -> None:
    """A Slack, webhook and PagerDuty channel that take only this kind; the other money rule is off."""
    add_channel("slack", f"http://127.0.0.1:{receivers['slack'].port}{SLACK_PATH}", kinds=[kind])
    add_channel("webhook", receivers["webhook"].url, secret=WEBHOOK_SECRET, kinds=[kind])
    add_channel("pagerduty", receivers["pagerduty"].url, secret=ROUTING_KEY, kinds=[kind])
    other = "spend_anomaly" if kind == "budget" else "budget"
    AlertRule.objects.filter(kind=other).update(enabled=False)


def daily_budget(key: TogetherKey, amount: str = "10") -> Budget:
    return Budget.objects.create(name="prod-daily", scope="upstream_key", upstream_key=key, period="day",
                                 amount_usd=Decimal(amount))


def subjects(inbox: Inbox) -> list[str]:
    return [" ".join(subject.split()) for subject in inbox.subjects]  # unfolded header lines


def received(receivers: dict[str, Receiver]) -> dict[str, list[str]]:
    """What each channel was told: the webhook and PagerDuty by transition or action, Slack by text."""
    return {
        "webhook": [r.json["alert"]["transition"] for r in receivers["webhook"].requests],
        "pagerduty": [r.json["event_action"] for r in receivers["pagerduty"].requests],
        "slack": [r.json["text"] for r in receivers["slack"].requests],
    }


@time_machine.travel(NOON, tick=False)
def test_a_budget_at_100_percent_alerts_once_per_channel_and_the_next_day_resolves_it(
    key: TogetherKey, inbox: Inbox, receivers: dict[str, Receiver]
) -> None:
    channels_for(receivers, "budget")
    budget = daily_budget(key)
    spend(key, "5", NOON - timedelta(hours=2))
    assert evaluate_alerts_now() == 0  # 50%: below both thresholds

    spend(key, "6", NOON - timedelta(minutes=5))  # 110%: past 80 and 100 at once
    evaluate_alerts_now()
    evaluate_alerts_now()  # a duplicated beat, or another worker
    deliver_pending()
    deliver_pending()

    got = received(receivers)
    assert got["webhook"] == ["fired"] and got["pagerduty"] == ["trigger"] and len(got["slack"]) == 1
    assert "prod-daily at 100%" in got["slack"][0]
    assert len(inbox.messages) == 1
    body = inbox.text()
    assert "$11.00 spent since 2026-04-14 00:00 UTC, 110.0% of it" in body
    assert "It resets at 2026-04-15 00:00 UTC" in body
    firing = Alert.objects.get(state=Alert.State.FIRING)
    assert firing.subject == f"budget:{budget.pk}:100:2026-04-14"

    with time_machine.travel(datetime(2026, 4, 15, 0, 1, tzinfo=UTC), tick=False):
        evaluate_alerts_now()
        deliver_pending()
    assert Alert.objects.get(pk=firing.pk).state == Alert.State.RESOLVED
    got = received(receivers)
    # A new period is not an outage ending: no email, Slack or webhook; PagerDuty closes its incident.
    assert got["pagerduty"] == ["trigger", "resolve"] and got["webhook"] == ["fired"]
    assert len(inbox.messages) == 1

    with time_machine.travel(datetime(2026, 4, 15, 9, 0, tzinfo=UTC), tick=False):
        spend(key, "8.5", datetime(2026, 4, 15, 8, 0, tzinfo=UTC))
        evaluate_alerts_now()
        deliver_pending()
    assert received(receivers)["webhook"] == ["fired", "fired"]  # the new day's 80%
    assert "prod-daily at 80%" in subjects(inbox)[-1]


@time_machine.travel(NOON, tick=False)
def test_each_threshold_alerts_once_in_its_period_as_the_spend_crosses_it(
    key: TogetherKey, inbox: Inbox, receivers: dict[str, Receiver]
) -> None:
    channels_for(receivers, "budget")
    daily_budget(key)
    spend(key, "8", NOON - timedelta(hours=1))
    evaluate_alerts_now()
    spend(key, "1", NOON - timedelta(minutes=30))  # 90%: still only the 80% threshold
    evaluate_alerts_now()
    spend(key, "1", NOON - timedelta(minutes=10))  # 100%
    evaluate_alerts_now()
    evaluate_alerts_now()
    deliver_pending()

    assert received(receivers)["webhook"] == ["fired", "fired"]
    assert received(receivers)["pagerduty"] == ["trigger", "trigger"]
    assert [s.split("budget ")[-1] for s in subjects(inbox)] == ["prod-daily at 80%", "prod-daily at 100%"]
    assert Alert.objects.filter(state=Alert.State.FIRING).count() == 2  # the 80% one stays firing


@time_machine.travel(NOON, tick=False)
def test_unpriced_spend_is_named_a_lower_bound_in_the_alert(key: TogetherKey, inbox: Inbox) -> None:
    AlertRule.objects.filter(kind="spend_anomaly").update(enabled=False)
    daily_budget(key, amount="1")
    spend(key, "1", NOON - timedelta(minutes=20))
    spend(key, "1", NOON - timedelta(minutes=10), model="acme/private-finetune")  # no price
    evaluate_alerts_now()
    deliver_pending()
    assert "lower bound: 1 requests had no price" in inbox.text()


# ---- the spend anomaly rule --------------------------------------------------------------------------


def baseline(key: TogetherKey, dollars: str, model: str = MODEL) -> None:
    """The same hour of each of the last 7 days, at 11:45."""
    for days in range(1, 8):
        spend(key, dollars, NOON - timedelta(days=days, minutes=45), model)


@time_machine.travel(NOON, tick=False)
def test_spend_over_twice_the_same_hours_7_day_average_fires_per_key_and_model(
    key: TogetherKey, inbox: Inbox, receivers: dict[str, Receiver], settings: object
) -> None:
    settings.SPEND_ANOMALY_MIN_USD = Decimal("1.00")
    channels_for(receivers, "spend_anomaly")
    quiet = TogetherKey.create("batch-jobs", f"tk-batch-{secrets.token_hex(12)}")
    baseline(key, "1")
    baseline(key, "1", OTHER)
    spend(key, "2.50", NOON - timedelta(minutes=20))  # 2.5x its usual hour
    spend(key, "1.50", NOON - timedelta(minutes=20), OTHER)  # 1.5x: normal enough
    spend(quiet, "0.60", NOON - timedelta(minutes=20))  # new, but under the minimum: never pages

    evaluate_alerts_now()
    evaluate_alerts_now()
    deliver_pending()

    alert = Alert.objects.get(rule__kind="spend_anomaly", state=Alert.State.FIRING)
    assert alert.subject == f"spend:{key.pk}:{MODEL}"
    assert received(receivers)["webhook"] == ["fired"]
    assert len(inbox.messages) == 1
    assert "$2.50 spent on meta-llama/Llama-3.3-70B-Instruct-Turbo with the key prod-main" in inbox.text()
    assert "against $1.00 on average" in inbox.text()

    with time_machine.travel(NOON + timedelta(hours=1, minutes=5), tick=False):
        evaluate_alerts_now()  # the hour passed and the spend is back to nothing
    assert Alert.objects.get(pk=alert.pk).state == Alert.State.RESOLVED


@time_machine.travel(NOON, tick=False)
def test_the_minimum_and_the_factor_are_settable(key: TogetherKey, settings: object) -> None:
    baseline(key, "1")
    spend(key, "2.50", NOON - timedelta(minutes=20))
    settings.SPEND_ANOMALY_MIN_USD = Decimal("5")
    evaluate_alerts_now()
    assert not Alert.objects.filter(rule__kind="spend_anomaly").exists()

    settings.SPEND_ANOMALY_MIN_USD = Decimal("1")
    AlertRule.objects.filter(kind="spend_anomaly").update(threshold=3)
    evaluate_alerts_now()
    assert not Alert.objects.filter(rule__kind="spend_anomaly").exists()
    AlertRule.objects.filter(kind="spend_anomaly").update(threshold=2)
    evaluate_alerts_now()
    assert Alert.objects.filter(rule__kind="spend_anomaly", state=Alert.State.FIRING).count() == 1
