"""The alerts page: firing now, history, deliveries with their last error; muting a rule for oneself."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client

from tests.alerts.conftest import SmtpServer
from together_dash.alerts.delivery import deliver_pending
from together_dash.alerts.evaluation import fire_billing
from together_dash.alerts.kinds import Kind
from together_dash.alerts.models import AlertRule, Mute
from together_dash.core.roles import VIEWER_GROUP
from together_dash.keys.models import TogetherKey

pytestmark = pytest.mark.django_db


@pytest.fixture
def viewer(rules: None) -> User:
    user = User.objects.create_user("ops", email="ops@example.com")
    user.groups.add(Group.objects.get_or_create(name=VIEWER_GROUP)[0])
    return user


@pytest.fixture
def web(viewer: User) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(viewer)
    return client


def test_it_shows_the_firing_alert_and_the_pending_delivery_with_its_error(
    web: Client, smtp_down: SmtpServer, key: TogetherKey
) -> None:
    fire_billing(key.pk, datetime.now(UTC), "traffic")
    deliver_pending()

    page = web.get("/alerts/").content.decode()

    assert "Credits exhausted (HTTP 402)" in page
    assert "key prod-main" in page
    assert "pending" in page
    assert "Connection refused" in page or "ConnectionRefused" in page
    assert "fired" in page


def test_a_viewer_mutes_and_unmutes_a_rule_for_themselves(web: Client, viewer: User) -> None:
    rule = AlertRule.objects.get(kind=Kind.POLLER_STALE)
    page = web.get("/alerts/")
    token = page.cookies["csrftoken"].value

    web.post(f"/alerts/rules/{rule.pk}/mute", HTTP_X_CSRFTOKEN=token)
    assert Mute.objects.filter(user=viewer, rule=rule).exists()
    assert "Unmute" in web.get("/alerts/").content.decode()

    web.post(f"/alerts/rules/{rule.pk}/unmute", HTTP_X_CSRFTOKEN=token)
    assert not Mute.objects.exists()


def test_muting_without_a_csrf_token_is_refused(web: Client) -> None:
    rule = AlertRule.objects.get(kind=Kind.BILLING)
    response = web.post(f"/alerts/rules/{rule.pk}/mute")

    assert response.status_code == 403
    assert not Mute.objects.exists()


def test_anonymous_visitors_are_sent_to_the_login_page(client: Client, rules: None) -> None:
    response = client.get("/alerts/")

    assert response.status_code == 302
    assert "/accounts/login/" in response["Location"]
