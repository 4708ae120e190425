"""The endpoints page and one endpoint's page, from endpoints polled off the simulator: state, hardware,
price, uptime and cost today, our traffic through the proxy, the timeline, honest empty states, roles."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from tests.dashboard.conftest import logged_in
from tests.endpoints.conftest import BOOT_S, Fleet
from together_dash.endpoints.models import Endpoint
from together_dash.pollers.testing import add_key, fault_for_key

pytestmark = pytest.mark.django_db(transaction=True)

A100_PER_MINUTE = Decimal("0.0427")  # the simulator's 4.27 cents


def usage_of(response: object, endpoint_id: str) -> object:
    return next(u for u in response.context["usages"] if u.endpoint.endpoint_id == endpoint_id)


def test_the_page_shows_state_price_uptime_cost_and_traffic_today(fleet: Fleet, viewer: User) -> None:
    idle = fleet.create(autoscaling={"min_replicas": 2, "max_replicas": 3})
    busy = fleet.create(inactive_timeout=60)
    fleet.poll()  # 08:00, PENDING
    fleet.run(3600, every=300)  # STARTED seen at 08:05
    assert fleet.chat_through_proxy(busy["name"], count=3) == [200, 200, 200]
    fleet.run(3300, every=300)  # 09:55

    page = fleet.get(logged_in(viewer), reverse("endpoints-list"))

    assert page.status_code == 200
    html = page.content.decode()
    first, second = usage_of(page, idle["id"]), usage_of(page, busy["id"])
    # 110 minutes STARTED (08:05 to 09:55) x $0.0427 a minute x 2 replicas, and x 1 replica.
    assert first.started_seconds == 110 * 60
    assert first.cost == 110 * A100_PER_MINUTE * 2 == Decimal("9.394")
    assert second.cost == 110 * A100_PER_MINUTE
    assert (first.traffic.requests, second.traffic.requests) == (0, 3)
    assert page.context["cost_today"] == first.cost + second.cost
    assert page.context["billing_per_hour"] == 60 * A100_PER_MINUTE * 3
    for shown in (idle["name"], "STARTED", "1x_nvidia_a100_80gb_sxm", "$0.0854", "2 × $0.0427", "1 h 50 min",
                  "$9.39", "$4.70", "$14.09", "$7.69/hour", "idle"):
        assert shown in html, shown
    row = html[html.index(f'data-endpoint="{busy["id"]}"'):]
    assert "60 min" in row[: row.index("</tr>")]


def test_uptime_today_starts_at_midnight(fleet: Fleet, viewer: User) -> None:
    fleet.at(datetime(2026, 3, 9, 23, 0, tzinfo=UTC))
    endpoint = fleet.create()
    fleet.poll()
    fleet.run(2 * 3600, every=600)  # STARTED seen at 23:10; now 01:00

    page = fleet.get(logged_in(viewer), reverse("endpoints-list"))

    usage = usage_of(page, endpoint["id"])
    assert usage.started_seconds == 3600
    assert usage.cost == 60 * A100_PER_MINUTE
    assert usage.uptime_share == 1.0


def test_an_endpoint_deleted_today_still_shows_what_it_cost(fleet: Fleet, viewer: User) -> None:
    endpoint = fleet.create()
    fleet.poll()
    fleet.run(1800, every=600)  # STARTED seen at 08:10
    fleet.delete(endpoint["id"])
    fleet.run(1200, every=600)  # DELETED seen at 08:40

    page = fleet.get(logged_in(viewer), reverse("endpoints-list"))

    usage = usage_of(page, endpoint["id"])
    assert usage.cost == 30 * A100_PER_MINUTE
    assert page.context["billing_per_hour"] == 0
    assert "deleted" in page.content.decode()


def test_the_detail_page_shows_the_state_timeline(fleet: Fleet, viewer: User) -> None:
    endpoint = fleet.create()
    fleet.poll()
    fleet.run(BOOT_S, every=10)
    fleet.patch(endpoint["id"], state="STOPPED")
    fleet.run(30, every=10)

    page = fleet.get(logged_in(viewer), reverse("endpoints-detail", args=[endpoint["id"]]))

    assert page.status_code == 200
    html = page.content.decode()
    timeline = html[html.index("State timeline"):]
    newest_first = ("STOPPED", "STOPPING", "STARTED", "STARTING", "PENDING")
    order = [timeline.index(f">{state}</span>") for state in newest_first]
    assert order == sorted(order)  # newest first
    assert "first seen" in timeline
    assert endpoint["name"] in html and "1x_nvidia_a100_80gb_sxm" in html
    assert "none: it never stops by itself" in html


def test_a_started_endpoint_with_no_timeout_says_what_it_bills(fleet: Fleet, viewer: User) -> None:
    endpoint = fleet.create()
    fleet.run(BOOT_S)

    html = fleet.get(logged_in(viewer), reverse("endpoints-detail", args=[endpoint["id"]])).content.decode()

    assert "STARTED with no inactive timeout: it bills $2.56 an hour" in html
    assert "$0.0427 a minute, $2.56 an hour" in html
    assert "1 replica × 4.27 cents a minute" in html


def test_with_no_key_the_page_says_to_add_one(viewer: User) -> None:
    html = logged_in(viewer).get(reverse("endpoints-list")).content.decode()

    assert "No active Together key yet" in html


def test_before_the_first_poll_the_page_says_how_to_run_it(viewer: User) -> None:
    add_key("main")

    html = logged_in(viewer).get(reverse("endpoints-list")).content.decode()

    assert "has not completed a run yet" in html
    assert "manage.py poll_endpoints" in html


def test_an_account_without_endpoints_says_so(fleet: Fleet, viewer: User) -> None:
    fleet.poll()

    html = fleet.get(logged_in(viewer), reverse("endpoints-list")).content.decode()

    assert "No dedicated endpoint on this account" in html
    assert "Last polled" in html


def test_a_failing_poll_is_shown_with_the_key_and_its_error(fleet: Fleet, viewer: User) -> None:
    fleet.create()
    fleet.poll()
    fleet.advance(60)
    fleet.poll(config=fault_for_key("main", "503"))

    html = fleet.get(logged_in(viewer), reverse("endpoints-list")).content.decode()

    assert "The last <code>poll_endpoints</code> run failed" in html
    assert "service_unavailable" in html
    assert Endpoint.objects.get().name in html  # what was polled before is still shown
    assert fleet.secret not in html


def test_the_nav_links_to_the_page(viewer: User) -> None:
    html = logged_in(viewer).get(reverse("dashboard-overview")).content.decode()

    assert f'href="{reverse("endpoints-list")}"' in html


@pytest.mark.parametrize("name", ["endpoints-list", "endpoints-detail"])
def test_access_per_role(fleet: Fleet, name: str, viewer: User, key_admin: User, nobody: User) -> None:
    endpoint = fleet.create()
    fleet.poll()
    url = reverse(name, args=[endpoint["id"]] if name == "endpoints-detail" else [])

    anonymous = Client().get(url)

    assert anonymous.status_code == 302 and reverse("login") in anonymous["Location"]
    assert fleet.get(logged_in(nobody), url).status_code == 403
    assert fleet.get(logged_in(viewer), url).status_code == 200
    assert fleet.get(logged_in(key_admin), url).status_code == 200


def test_an_unknown_endpoint_is_a_404(viewer: User) -> None:
    assert logged_in(viewer).get(reverse("endpoints-detail", args=["endpoint-nope"])).status_code == 404
