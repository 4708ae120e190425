"""The credit runway against the simulator's own bill: billed hours from the stored report, observed
spend from the rollups around them (never both for one hour), the last day's burn rate, the state
without a balance, the zero crossing, organisations, and the set_credit_balance command."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.models import Sum
from django.test.utils import CaptureQueriesContext

from tests.billing.conftest import MODEL, Biller
from together_dash.billing.balances import BalanceError, enter_balance
from together_dash.billing.models import BillingLineItem, CreditBalance, Organization
from together_dash.billing.runway import current_runways
from together_dash.catalog.polling import poll_models
from together_dash.keys.audit import Actor
from together_dash.keys.models import AuditLog, TogetherKey
from together_dash.pollers.testing import add_key
from together_dash.simulator.state import ORGANIZATION
from together_dash.traffic.entries import LogEntry
from together_dash.traffic.models import RequestLog
from together_dash.traffic.recording import record_entries

pytestmark = pytest.mark.django_db

ORG = ORGANIZATION["organization_id"]
OTHER_ORG = "org_simulated_other"
BALANCE_AT = datetime(2026, 3, 10, 8, 30, tzinfo=UTC)
POLL_AT = datetime(2026, 3, 10, 10, 30, tzinfo=UTC)  # the report then covers hours up to 10:00
NOW = datetime(2026, 3, 10, 10, 45, tzinfo=UTC)
COMMAND = Actor(via=AuditLog.Via.COMMAND)


def observe(key: TogetherKey | None, at: datetime, usage: dict, model: str = MODEL, **fields: object) -> None:
    """What the proxy records for a call: priced at write time from our catalog."""
    entry = LogEntry(
        created_at=at, endpoint="/v1/chat/completions", upstream_key_id=key.id if key else None,
        model_requested=model, status_code=200, latency_ms=200.0, prompt_tokens=usage["prompt_tokens"],
        completion_tokens=usage["completion_tokens"], total_tokens=usage["total_tokens"],
    )
    for name, value in fields.items():
        setattr(entry, name, value)
    record_entries([entry])


def call(biller: Biller, key: TogetherKey, secret: str, at: datetime, *, seen: bool = True) -> None:
    """A call Together bills at `at`; `seen`: it went through the dashboard, which recorded it too."""
    biller.at(at)
    usage = biller.chat(secret, content=f"tell me about {at:%H:%M} " * 5)
    if seen:
        observe(key, at, usage)


def billed(start: datetime, end: datetime, organization_id: str = ORG) -> Decimal:
    items = BillingLineItem.objects.filter(
        organization__organization_id=organization_id, start_time__gte=start, start_time__lt=end
    )
    return sum(items.values_list("cost", flat=True), Decimal(0))


def observed(start: datetime, end: datetime, **filters: object) -> Decimal:
    logs = RequestLog.objects.filter(created_at__gte=start, created_at__lt=end, **filters)
    return logs.aggregate(cost=Sum("cost_usd"))["cost"] or Decimal(0)


def at(hour: int, minute: int) -> datetime:
    return datetime(2026, 3, 10, hour, minute, tzinfo=UTC)


@pytest.fixture
def account(biller: Biller) -> tuple[TogetherKey, str]:
    found = add_key("main")
    poll_models()  # our side prices each request from the catalog, Together's bill from its own
    return found


@pytest.fixture
def traffic(biller: Biller, account: tuple[TogetherKey, str]) -> Biller:
    """Calls before the balance's date, in its own hour, in a billed hour (one bypassing the dashboard),
    and after the last billed hour; then the hourly poll."""
    key, secret = account
    call(biller, key, secret, at(7, 50))  # before the balance: never counted
    call(biller, key, secret, at(8, 40))  # the balance's own hour: observed
    call(biller, key, secret, at(9, 10))  # billed: its observed cost must not count as well
    call(biller, key, secret, at(9, 20), seen=False)  # billed only: it bypassed the dashboard
    biller.poll(POLL_AT)
    call(biller, key, secret, at(10, 20))  # after the last billed hour: observed
    return biller


def runways() -> list:
    with time_machine.travel(NOW, tick=False):
        return current_runways()


def test_billed_hours_replace_observed_ones_and_each_edge_is_counted_once(traffic: Biller) -> None:
    enter_balance(Decimal("5.00"), BALANCE_AT, COMMAND, now=NOW)

    [found] = runways()

    since = found.since
    assert since.billed_span == (at(9, 0), at(10, 0))
    assert since.billed_usd == billed(at(9, 0), at(10, 0)) > 0
    # The 09:20 call bypassed the dashboard: the bill has it, our records do not.
    assert since.billed_usd > observed(at(9, 0), at(10, 0))
    assert since.observed_usd == observed(at(8, 30), at(9, 0)) + observed(at(10, 0), NOW)
    assert since.observed_usd > 0 and since.unpriced_requests == 0
    assert found.left_usd == Decimal("5.00") - since.billed_usd - since.observed_usd
    # A few small calls a day: $5 lasts decades, too far off for a date to mean anything.
    assert found.hours_left > 24 * 3650 and found.runs_out_at is None
    # The 07:50 call, billed and observed, was before the balance's date: it is in neither sum above.
    assert billed(at(7, 0), at(8, 0)) > 0 and observed(at(7, 0), at(8, 0)) > 0


def test_the_burn_rate_is_the_last_24_hours_and_gives_the_hours_left(traffic: Biller) -> None:
    enter_balance(Decimal("0.01"), BALANCE_AT, COMMAND, now=NOW)

    [found] = runways()

    burn = found.burn
    day_ago = NOW - timedelta(hours=24)
    # Every billed hour of the last day (07:00 and 08:00 included), observed after 10:00 only.
    assert burn.billed_span == (day_ago + timedelta(minutes=15), at(10, 0))
    assert burn.billed_usd == billed(day_ago, at(10, 0))
    assert burn.observed_usd == observed(at(10, 0), NOW)
    rate = burn.total_usd / 24
    assert found.burn_per_hour_usd == rate.quantize(Decimal("0.00000001"))
    assert found.hours_left == (found.left_usd / rate).quantize(Decimal("0.1"))
    assert found.runs_out_at == NOW + timedelta(hours=float(found.hours_left))
    assert not found.exhausted and not found.lower_bound


def test_without_a_balance_only_the_burn_rate_is_given(traffic: Biller) -> None:
    [found] = runways()

    assert found.balance is None and found.since is None
    assert found.left_usd is None and found.hours_left is None and found.runs_out_at is None
    assert found.burn.total_usd == billed(NOW - timedelta(hours=24), at(10, 0)) + observed(at(10, 0), NOW)
    assert found.burn_per_hour_usd > 0


def test_spend_past_the_balance_is_a_plain_zero_crossing(biller: Biller, account: tuple) -> None:
    key, _ = account
    heavy = {"prompt_tokens": 20_000_000, "completion_tokens": 0, "total_tokens": 20_000_000}
    observe(key, at(9, 0), heavy)
    observe(key, at(9, 1), {"prompt_tokens": None, "completion_tokens": None, "total_tokens": None},
            status_code=402, category="billing", kind="insufficient_credits", error_message="no credits")
    enter_balance(Decimal("1.00"), BALANCE_AT, COMMAND, now=NOW)

    [found] = runways()

    assert found.since.observed_usd == observed(at(9, 0), at(9, 1)) > Decimal("1.00")
    assert found.left_usd < 0 and found.exhausted
    assert found.hours_left == 0 and found.billing_errors == 1


def test_unpriced_requests_make_spend_a_lower_bound(biller: Biller, account: tuple) -> None:
    key, _ = account
    usage = {"prompt_tokens": 100, "completion_tokens": 10, "total_tokens": 110}
    observe(key, at(10, 10), usage, model="nobody/has-no-price")
    enter_balance(Decimal("3.00"), BALANCE_AT, COMMAND, now=NOW)

    [found] = runways()

    assert found.since.unpriced_requests == found.burn.unpriced_requests == 1
    assert found.since.lower_bound and found.lower_bound
    assert found.left_usd == Decimal("3.00")  # an upper bound: the unpriced request's cost is unknown


def test_a_balance_before_a_gap_in_the_report_counts_the_gap_as_observed(
    biller: Biller, account: tuple
) -> None:
    key, secret = account
    call(biller, key, secret, at(9, 10))
    biller.poll(POLL_AT)
    earlier = datetime(2026, 1, 20, 12, 0, tzinfo=UTC)  # January was never fetched: no bill for it
    usage = {"prompt_tokens": 1000, "completion_tokens": 0, "total_tokens": 1000}
    observe(key, earlier + timedelta(hours=1), usage)
    enter_balance(Decimal("9.00"), earlier, COMMAND, now=NOW)

    [found] = runways()

    assert found.since.billed_span == (datetime(2026, 2, 1, tzinfo=UTC), at(10, 0))
    assert found.since.observed_usd == observed(earlier, datetime(2026, 2, 1, tzinfo=UTC)) > 0
    assert found.since.billed_usd == billed(at(9, 0), at(10, 0))


def test_each_organisation_has_its_own_runway_from_its_own_keys(biller: Biller, account: tuple) -> None:
    key, secret = account
    other, other_secret = add_key("other-org")
    biller.simulator.set_scenario(key_organizations={other_secret: OTHER_ORG})
    call(biller, key, secret, at(9, 10))
    call(biller, other, other_secret, at(9, 15))
    biller.poll(POLL_AT)
    call(biller, key, secret, at(10, 20))
    call(biller, other, other_secret, at(10, 25))
    mine = Organization.objects.get(organization_id=ORG)
    enter_balance(Decimal("2.00"), BALANCE_AT, COMMAND, organization=mine, now=NOW)

    first, second = runways()

    by_org = {found.scope.organization.organization_id: found for found in (first, second)}
    own, theirs = by_org[ORG], by_org[OTHER_ORG]
    assert own.since.billed_usd == billed(at(9, 0), at(10, 0), ORG)
    assert own.since.observed_usd == observed(at(10, 0), NOW, upstream_key=key)
    assert theirs.balance is None
    assert theirs.burn.billed_usd == billed(NOW - timedelta(hours=24), at(10, 0), OTHER_ORG) > 0
    assert theirs.burn.observed_usd == observed(at(10, 0), NOW, upstream_key=other)


def test_an_account_wide_balance_applies_until_an_organisation_has_its_own(
    biller: Biller, account: tuple
) -> None:
    account_wide = enter_balance(Decimal("5.00"), BALANCE_AT - timedelta(hours=1), COMMAND, now=NOW)
    assert account_wide.organization is None  # no organisation known yet
    call(biller, *account, at(9, 10))
    biller.poll(POLL_AT)  # now one is
    [found] = runways()
    assert found.balance == account_wide and found.scope.organization is None
    assert found.since.billed_usd == billed(at(9, 0), at(10, 0)) > 0

    newer = enter_balance(Decimal("4.00"), BALANCE_AT, COMMAND, now=NOW)

    assert newer.organization.organization_id == ORG  # the only organisation: it is the one
    [found] = runways()
    assert found.balance == newer and found.scope.organization == newer.organization


# ---- the checks and the command ------------------------------------------------------------------

def test_the_service_refuses_what_cannot_be_a_balance(db: None) -> None:
    for amount, message in [
        (Decimal("-1"), "cannot be negative"),
        (Decimal("1.234"), "two decimal places"),
        (Decimal("NaN"), "a number"),
        (Decimal("1e12"), "below"),
    ]:
        with pytest.raises(BalanceError, match=message):
            enter_balance(amount, BALANCE_AT, COMMAND, now=NOW)
    with pytest.raises(BalanceError, match="in the future"):
        enter_balance(Decimal(1), NOW + timedelta(minutes=1), COMMAND, now=NOW)
    assert not CreditBalance.objects.exists()
    assert not AuditLog.objects.exists()


def test_the_command_records_and_audits_a_balance(db: None, capsys: pytest.CaptureFixture[str]) -> None:
    User.objects.create_user("ops-bot")

    call_command("set_credit_balance", "1234.5", "--as-of", "2026-03-10T08:30Z", "--user", "ops-bot")

    balance = CreditBalance.objects.get()
    assert (balance.balance_usd, balance.as_of) == (Decimal("1234.50"), BALANCE_AT)
    assert balance.organization is None
    assert (balance.entered_by_name, balance.via) == ("ops-bot", "command")
    entry = AuditLog.objects.get()
    assert (entry.key_type, entry.key_id) == ("credit", balance.pk)
    assert (entry.action, entry.outcome) == ("create", "success")
    assert entry.username == "ops-bot" and "$1,234.50" in entry.detail
    assert "Recorded $1,234.50 as of 2026-03-10T08:30+00:00" in capsys.readouterr().out


def test_the_command_explains_bad_input_and_stores_nothing(db: None) -> None:
    Organization.objects.create(organization_id="org_a", name="A")
    Organization.objects.create(organization_id="org_b", name="B")
    cases = [
        (["12,50"], "is not a number"),
        (["-3"], "cannot be negative"),
        (["10", "--as-of", "yesterday"], "not an ISO 8601"),
        (["10", "--as-of", "2099-01-01"], "in the future"),
        (["10"], "several organisations"),
        (["10", "--organization", "org_c"], "No organisation 'org_c' is known"),
        (["10", "--user", "ghost"], "No user named"),
    ]
    for args, message in cases:
        with pytest.raises(CommandError, match=message):
            call_command("set_credit_balance", *args)
    assert not CreditBalance.objects.exists()

    call_command("set_credit_balance", "10", "--organization", "org_b", "--as-of", "2026-03-10T23:30+16:00")
    stored = CreditBalance.objects.get()
    assert stored.organization.organization_id == "org_b"
    assert stored.as_of == datetime(2026, 3, 10, 7, 30, tzinfo=UTC)  # stored in UTC, whatever the offset


def test_it_reads_rollups_and_billing_only_in_as_many_queries_whatever_the_volume(
    traffic: Biller, account: tuple
) -> None:
    key, _ = account
    enter_balance(Decimal("5.00"), BALANCE_AT - timedelta(days=20), COMMAND, now=NOW)
    with CaptureQueriesContext(connection) as few:
        runways()
    usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    for day in range(1, 20):
        for minute in range(0, 60, 7):
            observe(key, NOW - timedelta(days=day, minutes=minute), usage)
    with CaptureQueriesContext(connection) as many:
        runways()

    assert len(many) == len(few)
    assert not [query for query in many.captured_queries if "traffic_requestlog" in query["sql"]]
