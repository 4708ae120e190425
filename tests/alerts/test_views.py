"""The alerts pages: firing now, history, deliveries per channel with their last error; muting; the admin."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client

from tests.alerts.conftest import SmtpServer
from tests.alerts.receivers import Receiver
from together_dash.alerts.delivery import deliver_pending
from together_dash.alerts.evaluation import fire_billing
from together_dash.alerts.kinds import Kind
from together_dash.alerts.models import Alert, AlertChannel, AlertRule, Mute, Notification
from together_dash.alerts.services import add_channel
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


# ---- channels: the alert's own page, and the admin ------------------------------------------------------

SLACK_PATH = "/services/T0001/B0002/sl4ckT0kenSecretPart"
ROUTING_KEY = "R0UT1NGKEY0123456789abcdefPDkey1"


def test_the_alert_page_shows_each_channels_delivery_state_and_no_secret(
    web: Client, receiver: Receiver, key: TogetherKey
) -> None:
    down = Receiver()  # its port refuses connections
    add_channel("slack", f"http://127.0.0.1:{receiver.port}{SLACK_PATH}", name="ops-slack")
    add_channel("pagerduty", down.url, secret=ROUTING_KEY, name="pager")
    fire_billing(key.pk, datetime.now(UTC), "traffic")
    deliver_pending()
    down.stop()
    alert = Alert.objects.get()

    page = web.get(f"/alerts/{alert.pk}/").content.decode()

    assert "Credits exhausted (HTTP 402)" in page and "key prod-main" in page
    slack_row = page.split("ops-slack")[1].split("</tr>")[0]
    pager_row = page.split("pager <span")[1].split("</tr>")[0]
    assert "status-sent" in slack_row
    assert "status-pending" in pager_row and (
        "Connection refused" in pager_row or "ConnectError" in pager_row
    )
    listing = web.get("/alerts/").content.decode()
    assert f"/alerts/{alert.pk}/" in listing and "ops-slack" in listing
    for html in (page, listing):
        assert "sl4ckT0ken" not in html and ROUTING_KEY not in html and "…Part" in listing


def test_the_admin_never_shows_a_channel_secret_and_keeps_it_when_left_blank(
    receiver: Receiver, key: TogetherKey
) -> None:
    admin = User.objects.create_superuser("root", "root@example.com", "pw")
    client = Client()
    client.force_login(admin)
    url = f"http://127.0.0.1:{receiver.port}{SLACK_PATH}"
    response = client.post(
        "/admin/alerts/alertchannel/add/",
        {"name": "ops-slack", "kind": "slack", "target": url, "enabled": "on", "kinds": ["billing"]},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    channel = AlertChannel.objects.get()
    assert (channel.target, channel.kinds) == (url, ["billing"])

    response = client.post(
        f"/admin/alerts/alertchannel/{channel.pk}/change/",
        {"name": "ops-slack-2", "kind": "slack", "target": "", "secret": "", "enabled": "on"},
    )
    assert response.status_code == 302
    channel.refresh_from_db()
    assert (channel.name, channel.target, channel.kinds) == ("ops-slack-2", url, [])

    fire_billing(key.pk, datetime.now(UTC), "traffic")
    deliver_pending()
    pages = [
        client.get("/admin/alerts/alertchannel/"),
        client.get(f"/admin/alerts/alertchannel/{channel.pk}/change/"),
        client.get(f"/admin/alerts/notification/{Notification.objects.get().pk}/change/"),
    ]
    for page in pages:
        assert page.status_code == 200
        assert "sl4ckT0ken" not in page.content.decode()


def test_the_admin_refuses_a_metadata_target(receiver: Receiver, settings: object) -> None:
    admin = User.objects.create_superuser("root", "root@example.com", "pw")
    client = Client()
    client.force_login(admin)
    response = client.post(
        "/admin/alerts/alertchannel/add/",
        {"name": "evil", "kind": "webhook", "target": "http://169.254.169.254/", "secret": "s3cret-000001"},
    )

    assert response.status_code == 200
    assert "cloud metadata address" in response.content.decode()
    assert not AlertChannel.objects.exists()


def test_the_admin_sends_a_test_message_and_says_whether_it_arrived(receiver: Receiver) -> None:
    admin = User.objects.create_superuser("root", "root@example.com", "pw")
    client = Client()
    client.force_login(admin)
    channel = add_channel("webhook", receiver.url, secret="s3cret-000000000001", name="hook")[0]
    response = client.post(
        "/admin/alerts/alertchannel/",
        {"action": "send_test", "_selected_action": [channel.pk]},
        follow=True,
    )

    assert "Test message delivered to hook." in response.content.decode()
    assert receiver.requests[0].headers["x-together-dash-event"] == "test"
