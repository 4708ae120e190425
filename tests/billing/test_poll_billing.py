"""poll_billing against the simulator: exact amounts, idempotent refetches, pages, 403s, organisations,
the month boundary and revised windows."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest
import time_machine
from django.core.management import call_command

from tests.billing.conftest import Biller, exact
from together_dash.billing.models import (
    BillingDay,
    BillingLineItem,
    BillingMonth,
    BillingWindow,
    Organization,
    OrganizationKey,
)
from together_dash.billing.polling import POLLER, months_to_fetch
from together_dash.pollers.fanout import FanOutConfig
from together_dash.pollers.models import PollerHeartbeat, PollerKeyState
from together_dash.pollers.testing import add_key, fault_for_key
from together_dash.simulator.state import ORGANIZATION

pytestmark = pytest.mark.django_db

CALLS_AT = datetime(2026, 3, 10, 9, 30, tzinfo=UTC)
POLL_AT = datetime(2026, 3, 10, 10, 5, tzinfo=UTC)
ORG = ORGANIZATION["organization_id"]
OTHER_ORG = "org_simulated_other"


def stored(organization_id: str = ORG) -> list[tuple]:
    """Every stored line of an organisation: window start, product, attributes, and the amounts as text."""
    items = BillingLineItem.objects.filter(organization__organization_id=organization_id)
    return sorted(
        (i.start_time, i.product_name, tuple(sorted(i.attributes.items())), exact(i.quantity),
         exact(i.unit_price), exact(i.cost), i.applied_credit)
        for i in items
    )


def reported(windows: list) -> list[tuple]:
    """The same lines from together 3.x's parse of the report."""
    return sorted(
        (w.start_time, i.product_name, tuple(sorted(i.attributes.items())), exact(Decimal(i.quantity)),
         exact(Decimal(i.unit_price)), exact(Decimal(i.cost)),
         i.applied_credit.type if i.applied_credit else "")
        for w in windows
        for i in w.line_items
    )


def test_it_stores_every_line_item_exactly_as_reported(biller: Biller) -> None:
    _, secret = add_key("main")
    biller.at(CALLS_AT)
    biller.chat(secret)
    biller.chat(secret, content="a longer question " * 40)

    report = biller.poll(POLL_AT)

    assert report.ok == 1 and report.failed == 0
    assert stored() == reported(biller.report(secret, "2026-03"))
    (line,) = BillingLineItem.objects.filter(product_name="Serverless Inference - Input Tokens")
    assert line.unit_price == Decimal("0.00000088")
    assert line.cost == line.quantity * Decimal("0.00000088")
    assert isinstance(line.cost, Decimal)
    assert line.raw["cost"] == exact(line.cost)
    month = BillingMonth.objects.get(month="2026-03")
    assert (month.windows, month.cost) == (1, BillingWindow.objects.get().cost)


def test_a_second_poll_stores_nothing_new(biller: Biller) -> None:
    _, secret = add_key("main")
    biller.at(CALLS_AT)
    biller.chat(secret)
    biller.poll(POLL_AT)
    before = list(BillingLineItem.objects.values_list("id", "identity").order_by("id"))

    again = biller.poll(POLL_AT + timedelta(minutes=30))

    assert list(BillingLineItem.objects.values_list("id", "identity").order_by("id")) == before
    assert again.counts.get("windows_added", 0) == 0 and again.counts["windows_unchanged"] == 1
    assert BillingWindow.objects.get().revisions == 0


def test_it_follows_the_cursor_through_small_pages(biller: Biller) -> None:
    _, secret = add_key("main")
    biller.simulator.set_scenario(billing_page_size=2)
    for hour in range(5):
        biller.at(CALLS_AT + timedelta(hours=hour))
        biller.chat(secret)

    biller.poll(CALLS_AT + timedelta(hours=5, minutes=1))

    assert BillingWindow.objects.count() == 5
    assert stored() == reported(biller.report(secret, "2026-03"))


def test_an_empty_month_is_recorded_with_no_windows(biller: Biller) -> None:
    add_key("main")

    report = biller.poll(POLL_AT)

    assert report.ok == 1
    months = dict(BillingMonth.objects.values_list("month", "windows"))
    assert months == {"2026-02": 0, "2026-03": 0}
    assert not BillingLineItem.objects.exists()


def test_a_key_without_billing_permission_is_recorded_and_the_next_key_answers(biller: Biller) -> None:
    denied, denied_secret = add_key("no-billing")
    allowed, secret = add_key("billing-admin")
    biller.simulator.set_scenario(billing_denied_keys=[denied_secret])
    biller.at(CALLS_AT)
    biller.chat(secret)

    report = biller.poll(POLL_AT)

    state = PollerKeyState.objects.get(poller=POLLER, key=denied)
    assert (state.last_error_kind, state.consecutive_failures) == ("permission_denied", 1)
    assert PollerKeyState.objects.get(poller=POLLER, key=allowed).last_success is not None
    assert (report.ok, report.failed) == (1, 1)
    assert stored() == reported(biller.report(secret, "2026-03"))
    assert PollerHeartbeat.objects.get(name=POLLER).last_error == ""
    # The next hour the key that answered is asked first, and the denied one is left alone.
    biller.poll(POLL_AT + timedelta(hours=1))
    assert PollerKeyState.objects.get(poller=POLLER, key=denied).consecutive_failures == 1


def test_each_organisation_is_fetched_once_with_its_own_keys(biller: Biller) -> None:
    first, secret = add_key("org-a-1")
    second, second_secret = add_key("org-a-2")
    other, other_secret = add_key("org-b")
    biller.simulator.set_scenario(key_organizations={other_secret: OTHER_ORG})
    biller.at(CALLS_AT)
    biller.chat(secret)
    biller.chat(other_secret, content="from another organisation " * 10)

    report = biller.poll(POLL_AT)

    assert (report.counts["organizations"], report.counts["keys_not_asked"]) == (2, 1)
    assert stored(ORG) == reported(biller.report(second_secret, "2026-03"))
    assert stored(OTHER_ORG) == reported(biller.report(other_secret, "2026-03"))
    links = dict(OrganizationKey.objects.values_list("key_id", "organization__organization_id"))
    assert links == {first.id: ORG, second.id: ORG, other.id: OTHER_ORG}
    # One key per organisation was asked; the second key of the first organisation was not needed.
    assert not PollerKeyState.objects.filter(poller=POLLER, key=second).exists()
    assert Organization.objects.get(organization_id=ORG).name == ORGANIZATION["organization_name"]


def test_a_failing_key_does_not_stop_the_other_organisations(biller: Biller) -> None:
    broken, broken_secret = add_key("broken")
    _, other_secret = add_key("other")
    biller.simulator.set_scenario(key_organizations={other_secret: OTHER_ORG})
    biller.at(CALLS_AT)
    biller.chat(broken_secret)
    biller.chat(other_secret)

    report = biller.poll(POLL_AT, config=fault_for_key("broken", "500"))

    assert (report.ok, report.failed) == (1, 1)
    assert PollerKeyState.objects.get(poller=POLLER, key=broken).last_error_kind == "model_overloaded"
    assert stored(OTHER_ORG) == reported(biller.report(other_secret, "2026-03"))
    assert stored(ORG) == []


def test_at_the_month_boundary_the_previous_month_is_fetched_too(biller: Biller) -> None:
    _, secret = add_key("main")
    last_hour_of_february = datetime(2026, 2, 28, 23, 40, tzinfo=UTC)
    biller.at(last_hour_of_february)
    biller.chat(secret)
    biller.poll(last_hour_of_february + timedelta(minutes=10))  # still February's unfinished hour
    biller.at(datetime(2026, 3, 1, 0, 10, tzinfo=UTC))
    biller.chat(secret)

    biller.poll(datetime(2026, 3, 1, 1, 2, tzinfo=UTC))

    assert months_to_fetch(datetime(2026, 3, 1, 1, 2, tzinfo=UTC)) == ["2026-02", "2026-03"]
    starts = list(BillingWindow.objects.values_list("start_time", flat=True))
    assert starts == [datetime(2026, 2, 28, 23, tzinfo=UTC), datetime(2026, 3, 1, 0, tzinfo=UTC)]
    assert stored() == reported(biller.report(secret, "2026-02") + biller.report(secret, "2026-03"))
    months = dict(BillingMonth.objects.values_list("month", "windows"))
    assert months == {"2026-01": 0, "2026-02": 1, "2026-03": 1}  # the February poll asked for January


def test_a_revised_window_replaces_its_items(biller: Biller) -> None:
    _, secret = add_key("main")
    biller.at(CALLS_AT)
    biller.chat(secret)
    biller.poll(POLL_AT)
    # Late metering: more usage lands in the finished hour after it was fetched.
    biller.at(CALLS_AT + timedelta(minutes=5))
    biller.chat(secret, content="metered late " * 30)

    report = biller.poll(POLL_AT + timedelta(hours=1))

    window = BillingWindow.objects.get()
    assert report.counts["windows_revised"] == 1
    assert (window.revisions, window.revised_at) == (1, POLL_AT + timedelta(hours=1))
    assert stored() == reported(biller.report(secret, "2026-03"))
    assert window.cost == sum(i.cost for i in BillingLineItem.objects.all())


def test_a_window_the_report_no_longer_has_is_removed(biller: Biller) -> None:
    _, secret = add_key("main")
    biller.at(CALLS_AT)
    biller.chat(secret)
    biller.poll(POLL_AT)
    biller.simulator.reset()  # the simulator forgets its bill: the window was revised to nothing

    report = biller.poll(POLL_AT + timedelta(hours=1))

    assert report.counts["windows_removed"] == 1
    assert not BillingWindow.objects.exists() and not BillingLineItem.objects.exists()
    assert BillingMonth.objects.get(month="2026-03").windows == 0


def test_the_command_runs_the_same_poll(biller: Biller, capsys: pytest.CaptureFixture[str]) -> None:
    _, secret = add_key("main")
    biller.at(CALLS_AT)
    biller.chat(secret)
    biller.at(POLL_AT)

    with time_machine.travel(POLL_AT, tick=False):
        call_command("poll_billing")

    assert "poll_billing: 1/1 keys ok" in capsys.readouterr().out
    assert BillingLineItem.objects.count() == 2


class NoWhoami(httpx.AsyncBaseTransport):
    """The real transport, except that /whoami answers 404 (an API without it)."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/whoami"):
            return httpx.Response(404, json={"error": {"message": "Not found", "type": "not_found"}})
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def test_a_key_whose_whoami_is_silent_is_placed_by_the_report_itself(biller: Biller) -> None:
    key, secret = add_key("main")
    biller.at(CALLS_AT)
    biller.chat(secret)
    config = dataclasses.replace(FanOutConfig.from_settings(), transport=lambda ref: NoWhoami())

    report = biller.poll(POLL_AT, config=config)

    assert report.ok == 1
    assert OrganizationKey.objects.get(key=key).organization.organization_id == ORG
    assert stored() == reported(biller.report(secret, "2026-03"))


def day_sums() -> dict[tuple, tuple[Decimal, ...]]:
    """The day summaries: per day and model, input, cached input and output tokens and the cost."""
    return {
        (d.day, d.model, d.product_name): (d.input_tokens, d.cached_input_tokens, d.output_tokens, d.cost)
        for d in BillingDay.objects.all()
    }


TOKEN_LINES = {"Input Tokens": 0, "Cached Input Tokens": 1, "Output Tokens": 2}


def item_sums() -> dict[tuple, tuple[Decimal, ...]]:
    """The same sums made from the stored items (these tests bill chat calls only: token lines)."""
    found: dict[tuple, list[Decimal]] = {}
    for i in BillingLineItem.objects.all():
        key = (i.start_time.replace(hour=0), i.pricing_dimensions["model"], "")
        sums = found.setdefault(key, [Decimal(0)] * 4)
        sums[TOKEN_LINES[i.product_name.rsplit(" - ", 1)[-1]]] += i.quantity
        sums[3] += i.cost
    return {key: tuple(sums) for key, sums in found.items()}


def test_the_day_summaries_follow_added_revised_and_removed_windows(biller: Biller) -> None:
    _, secret = add_key("main")
    for hour in (0, 3):
        biller.at(CALLS_AT + timedelta(hours=hour))
        biller.chat(secret)
    biller.poll(POLL_AT + timedelta(hours=3))
    assert day_sums() == item_sums() and len(day_sums()) == 1  # one model on one day: one row

    biller.at(CALLS_AT + timedelta(minutes=5))
    biller.chat(secret, content="metered late " * 30)  # the first hour is revised
    biller.poll(POLL_AT + timedelta(hours=4))
    assert day_sums() == item_sums()

    biller.simulator.reset()  # every window revised to nothing
    biller.poll(POLL_AT + timedelta(hours=5))
    assert not BillingDay.objects.exists() and not BillingLineItem.objects.exists()
