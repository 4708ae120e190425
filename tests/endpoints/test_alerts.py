"""The endpoint alerts, from endpoints polled off the simulator: each fires through the outbox (a real SMTP
server and a webhook receiver on loopback) and resolves when its condition ends."""

from __future__ import annotations

import pytest
import time_machine

from tests.alerts.conftest import Inbox
from tests.alerts.receivers import Receiver
from tests.endpoints.conftest import BOOT_S, H200, Fleet
from together_dash.alerts.delivery import deliver_pending
from together_dash.alerts.kinds import Kind
from together_dash.alerts.models import Alert, AlertRule, Notification
from together_dash.alerts.services import add_channel
from together_dash.alerts.tasks import evaluate_alerts_now
from together_dash.pollers.testing import fault_for_key
from together_dash.simulator import endpoints as simulated

pytestmark = pytest.mark.django_db(transaction=True)

ENDPOINT_KINDS = (Kind.ENDPOINT_IDLE, Kind.ENDPOINT_NO_TIMEOUT, Kind.ENDPOINT_ERROR, Kind.ENDPOINT_SLOW_START)


def evaluate(fleet: Fleet) -> None:
    """The periodic evaluation and the delivery sweep, at our clock."""
    with time_machine.travel(fleet.now, tick=False):
        evaluate_alerts_now()
        deliver_pending()


def firing(kind: str) -> list[str]:
    alerts = Alert.objects.filter(rule__kind=kind, state=Alert.State.FIRING)
    return sorted(alerts.values_list("subject", flat=True))


def subjects(inbox: Inbox, kind: str) -> list[str]:
    label = Kind(kind).label
    unfolded = [" ".join(subject.split()) for subject in inbox.subjects]  # long headers are folded
    return [subject for subject in unfolded if label in subject]


def set_threshold(kind: str, minutes: float) -> None:
    AlertRule.objects.filter(kind=kind).update(threshold=minutes)


def test_an_idle_started_endpoint_alerts_with_its_hourly_cost_and_resolves_on_traffic(
    fleet: Fleet, inbox: Inbox, receiver: Receiver, rules: None
) -> None:
    add_channel("webhook", receiver.url, secret="whsec-endpoint-test-0123456789", kinds=[Kind.ENDPOINT_IDLE])
    endpoint = fleet.create(autoscaling={"min_replicas": 2, "max_replicas": 2})
    fleet.poll()
    fleet.run(29 * 60)  # STARTED seen at 08:01: not yet 30 minutes
    evaluate(fleet)
    assert firing(Kind.ENDPOINT_IDLE) == []

    fleet.run(2 * 60)
    evaluate(fleet)

    assert firing(Kind.ENDPOINT_IDLE) == [f"endpoint:{endpoint['id']}"]
    assert subjects(inbox, Kind.ENDPOINT_IDLE) == [
        f"[together-dash] Dedicated endpoint billing with no traffic: endpoint {endpoint['name']}"
    ]
    text = inbox.text(0)
    assert "no request recorded to" in text
    assert "It bills $5.12 an hour while STARTED (1x_nvidia_a100_80gb_sxm x 2)." in text
    assert f"/endpoints/{endpoint['id']}/" in text
    assert [body["alert"]["kind"] for body in receiver.bodies()] == [Kind.ENDPOINT_IDLE]
    assert "$5.12 an hour" in receiver.bodies()[0]["detail"]

    assert fleet.chat_through_proxy(endpoint["name"]) == [200]
    fleet.run(60)
    evaluate(fleet)

    assert firing(Kind.ENDPOINT_IDLE) == []
    assert subjects(inbox, Kind.ENDPOINT_IDLE)[-1].startswith("[together-dash] RESOLVED: Dedicated endpoint")
    assert [body["alert"]["transition"] for body in receiver.bodies()] == ["fired", "resolved"]


def test_an_idle_alert_resolves_when_the_endpoint_is_stopped(fleet: Fleet, inbox: Inbox, rules: None) -> None:
    set_threshold(Kind.ENDPOINT_IDLE, 5)
    endpoint = fleet.create(inactive_timeout=30)
    fleet.poll()
    fleet.run(6 * 60)
    evaluate(fleet)
    assert firing(Kind.ENDPOINT_IDLE) == [f"endpoint:{endpoint['id']}"]  # the threshold as set, not 30

    fleet.patch(endpoint["id"], state="STOPPED")
    fleet.run(60)
    evaluate(fleet)

    assert firing(Kind.ENDPOINT_IDLE) == []
    assert len(subjects(inbox, Kind.ENDPOINT_IDLE)) == 2


def test_an_endpoint_with_no_inactive_timeout_alerts_until_one_is_set(
    fleet: Fleet, inbox: Inbox, rules: None
) -> None:
    endpoint = fleet.create()
    fleet.poll()
    fleet.run(59 * 60, every=300)
    evaluate(fleet)
    assert firing(Kind.ENDPOINT_NO_TIMEOUT) == []

    fleet.run(10 * 60, every=300)
    evaluate(fleet)
    assert firing(Kind.ENDPOINT_NO_TIMEOUT) == [f"endpoint:{endpoint['id']}"]
    assert "it never stops by itself" in inbox.text(subjects_index(inbox, Kind.ENDPOINT_NO_TIMEOUT))

    fleet.patch(endpoint["id"], inactive_timeout=120)
    fleet.run(60)
    evaluate(fleet)

    assert firing(Kind.ENDPOINT_NO_TIMEOUT) == []
    assert len(subjects(inbox, Kind.ENDPOINT_NO_TIMEOUT)) == 2


def test_an_endpoint_in_error_alerts_until_it_is_deleted(fleet: Fleet, inbox: Inbox, rules: None) -> None:
    endpoint = fleet.create(hardware=H200, model="meta-llama/Llama-3.3-70B-Instruct-Turbo")
    fleet.poll()
    fleet.run(simulated.PENDING_S, every=5)
    evaluate(fleet)

    assert firing(Kind.ENDPOINT_ERROR) == [f"endpoint:{endpoint['id']}"]
    assert "has been in ERROR since" in inbox.text(subjects_index(inbox, Kind.ENDPOINT_ERROR))

    fleet.delete(endpoint["id"])
    fleet.run(60)
    evaluate(fleet)

    assert firing(Kind.ENDPOINT_ERROR) == []
    assert subjects(inbox, Kind.ENDPOINT_ERROR)[-1].startswith("[together-dash] RESOLVED:")


def test_an_alert_on_an_endpoint_its_key_no_longer_lists_says_how_old_its_state_is(
    fleet: Fleet, rules: None
) -> None:
    fleet.create(hardware=H200, model="meta-llama/Llama-3.3-70B-Instruct-Turbo")
    fleet.poll()
    fleet.run(simulated.PENDING_S, every=5)
    for _ in range(10):
        fleet.advance(60)
        fleet.poll(config=fault_for_key("main", "503"))
    evaluate(fleet)

    detail = Alert.objects.get(rule__kind=Kind.ENDPOINT_ERROR).context["detail"]
    assert "Last seen by poll_endpoints 10 min ago" in detail


def test_a_slow_start_alerts_past_its_threshold_and_resolves_once_started(
    fleet: Fleet, inbox: Inbox, rules: None
) -> None:
    set_threshold(Kind.ENDPOINT_SLOW_START, 0.5)  # 30 s; the simulator boots in 60
    endpoint = fleet.create()
    fleet.poll()
    fleet.run(25, every=5)  # PENDING, then STARTING: 25 s in all
    evaluate(fleet)
    assert firing(Kind.ENDPOINT_SLOW_START) == []

    fleet.run(15, every=5)
    evaluate(fleet)
    assert firing(Kind.ENDPOINT_SLOW_START) == [f"endpoint:{endpoint['id']}"]
    assert "has been starting (STARTING)" in inbox.text(subjects_index(inbox, Kind.ENDPOINT_SLOW_START))

    fleet.run(BOOT_S - 40, every=5)
    evaluate(fleet)

    assert firing(Kind.ENDPOINT_SLOW_START) == []
    assert len(subjects(inbox, Kind.ENDPOINT_SLOW_START)) == 2


def test_each_endpoint_alert_writes_one_notification_however_often_it_is_evaluated(
    fleet: Fleet, inbox: Inbox, rules: None
) -> None:
    set_threshold(Kind.ENDPOINT_IDLE, 1)
    fleet.create()
    fleet.run(3 * 60)
    for _ in range(3):
        evaluate(fleet)

    assert Notification.objects.filter(alert__rule__kind=Kind.ENDPOINT_IDLE).count() == 1
    assert len(subjects(inbox, Kind.ENDPOINT_IDLE)) == 1


def test_every_endpoint_kind_has_a_default_rule(rules: None) -> None:
    assert set(AlertRule.objects.filter(kind__in=ENDPOINT_KINDS).values_list("kind", flat=True)) == set(
        ENDPOINT_KINDS
    )


def subjects_index(inbox: Inbox, kind: str) -> int:
    """The index in the inbox of the first message about this kind."""
    label = Kind(kind).label
    return next(i for i, subject in enumerate(inbox.subjects) if label in subject)
