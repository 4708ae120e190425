"""poll_billing: each organisation's billing usage (GET /v1/billing/usage) for the current and the
previous month, stored exactly and idempotently.

Every active key's whoami names its organisation, and each organisation's report is fetched once, with
the first of its keys that answers: a key without billing permission (403) is recorded on its poll
state and the organisation's next key is tried. A key whose whoami names no organisation asks for its
own organisation's report, which names it. The previous month is fetched too, so the windows that
finished after the last poll of a month (the hour before midnight on the 1st, a late revision) land.
"""
from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.utils import timezone

from together_dash.billing.models import (
    AMOUNT_DIGITS,
    AMOUNT_PLACES,
    BillingDay,
    BillingLineItem,
    BillingMonth,
    BillingWindow,
    Organization,
    OrganizationKey,
)
from together_dash.billing.products import product_of, unit_of
from together_dash.pollers.fanout import FanOutConfig, KeyOutcome, KeyRef, fan_out, key_refs
from together_dash.pollers.models import PollerKeyState
from together_dash.pollers.runs import PollReport, active_keys, keys_due, record_outcomes, run_poller
from together_dash.together import types
from together_dash.together.client import AsyncTogetherClient, TogetherAPIError
from together_dash.together.errors import classify_bad_response

POLLER = "poll_billing"
# Hourly windows: the finest the report has, finished within the hour, and what our rollups count in.
GRANULARITY = "hour"
PAGE_LIMIT = 1000
# A month has at most 744 hourly windows: one page of 1000 in practice. A cursor that never ends does.
MAX_PAGES = 100


@dataclass(frozen=True, slots=True)
class MonthReport:
    """Every page of one month's report, joined."""

    month: str
    organization_id: str
    currency: str
    windows: tuple[types.BillingWindow, ...]
    earliest_window_start: datetime | None
    latest_window_end: datetime | None


@dataclass(frozen=True, slots=True)
class Group:
    """The keys of one organisation (None: a key whose whoami did not say), in the order to try them."""

    organization_id: str | None
    name: str
    keys: tuple[KeyRef, ...]


def poll_billing(token: str | None = None, config: FanOutConfig | None = None) -> PollReport:
    """Fetch and store the billing usage of every organisation the active keys belong to."""
    return run_poller(POLLER, lambda report: _poll(report, config), token)


def _poll(report: PollReport, config: FanOutConfig | None) -> None:
    now = timezone.now()
    months = months_to_fetch(now)
    keys, report.skipped = keys_due(POLLER, active_keys(), now)
    refs, broken = key_refs(keys)
    groups = _groups(fan_out(refs, _whoami, config))
    outcomes = broken + _fetch_groups(groups, months, config)
    record_outcomes(POLLER, outcomes, report)
    report.count("keys_not_asked", len(refs) + len(broken) - len(outcomes))
    names = {group.organization_id: group.name for group in groups}
    members = {key.id: group.organization_id for group in groups for key in group.keys}
    for outcome in outcomes:
        if outcome.ok and outcome.value:
            org_id = outcome.value[0].organization_id
            keys_of_org = {key_id for key_id, org in members.items() if org == org_id} | {outcome.key.id}
            store_reports(outcome.value, names.get(org_id, ""), sorted(keys_of_org), now, report)


def months_to_fetch(now: datetime) -> list[str]:
    """The previous and the current month (UTC), as the report names them (YYYY-MM)."""
    current = now.astimezone(UTC).replace(day=1)
    previous = current - timedelta(days=1)
    return [f"{previous:%Y-%m}", f"{current:%Y-%m}"]


def month_bounds(month: str) -> tuple[datetime, datetime]:
    start = datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
    return start, (start + timedelta(days=32)).replace(day=1)


# ---- organisations ---------------------------------------------------------------------------------------

async def _whoami(client: AsyncTogetherClient, key: KeyRef) -> types.WhoAmI | None:
    try:
        return (await client.whoami()).data
    except TogetherAPIError:
        return None  # the report names the organisation too: the key still gets its turn


def _groups(whoamis: Sequence[KeyOutcome[types.WhoAmI | None]]) -> list[Group]:
    """Keys grouped by organisation, keys that last failed this poll last; unknown ones alone."""
    states = PollerKeyState.objects.filter(poller=POLLER, consecutive_failures__gt=0)
    failing = set(states.values_list("key_id", flat=True))
    by_org: dict[str, list[KeyRef]] = {}
    names: dict[str, str] = {}
    alone: list[Group] = []
    for outcome in whoamis:
        who = outcome.value if outcome.ok else None
        if who is None or not who.organization_id:
            alone.append(Group(None, "", (outcome.key,)))
            continue
        by_org.setdefault(who.organization_id, []).append(outcome.key)
        names[who.organization_id] = who.organization_name or ""
    grouped = [
        Group(org_id, names[org_id], tuple(sorted(keys, key=lambda key: (key.id in failing, key.id))))
        for org_id, keys in sorted(by_org.items())
    ]
    return grouped + alone


def _fetch_groups(
    groups: Sequence[Group], months: list[str], config: FanOutConfig | None
) -> list[KeyOutcome[list[MonthReport]]]:
    """One report per organisation: every first key at once, then the next key where one failed.

    A key that was not needed (its organisation answered through another key) gets no outcome, so its
    poll state keeps what its own last attempt said.
    """
    outcomes: list[KeyOutcome[list[MonthReport]]] = []
    pending, turn = list(groups), 0
    while pending:
        asking = {group.keys[turn].id: group.organization_id for group in pending}
        answered = fan_out([group.keys[turn] for group in pending], _fetcher(asking, months), config)
        outcomes += answered
        failed = {outcome.key.id for outcome in answered if not outcome.ok}
        turn += 1
        pending = [g for g in pending if g.keys[turn - 1].id in failed and turn < len(g.keys)]
    return outcomes


def _fetcher(
    organizations: dict[int, str | None], months: list[str]
) -> Callable[[AsyncTogetherClient, KeyRef], Awaitable[list[MonthReport]]]:
    """The fan-out's fetch: every month of the organisation each key asks for."""

    async def fetch(client: AsyncTogetherClient, key: KeyRef) -> list[MonthReport]:
        return [await fetch_month(client, month, organizations[key.id]) for month in months]

    return fetch


async def fetch_month(client: AsyncTogetherClient, month: str, organization_id: str | None) -> MonthReport:
    """Every page of one month's hourly report, following next_cursor."""
    windows: list[types.BillingWindow] = []
    after: str | None = None
    cursors: set[str] = set()
    for _ in range(MAX_PAGES):
        page = (await client.billing_usage(month, GRANULARITY, after, PAGE_LIMIT, organization_id)).data
        _check_page(page, month, organization_id)
        windows += page.data
        if not page.next_cursor:
            return MonthReport(
                month, page.organization_id, page.currency, tuple(windows),
                page.earliest_window_start, page.latest_window_end,
            )
        if page.next_cursor in cursors:
            raise _bad_report(f"the billing report for {month} repeats its cursor")
        cursors.add(page.next_cursor)
        after = page.next_cursor
    raise _bad_report(f"the billing report for {month} has more than {MAX_PAGES} pages")


def _check_page(page: types.BillingUsageReport, month: str, organization_id: str | None) -> None:
    """A page must be the month and organisation asked for, with amounts we can store exactly."""
    if page.billing_period != month or not page.organization_id:
        raise _bad_report(f"asked for {month}, got a report for {page.billing_period or 'no month'}")
    if organization_id and page.organization_id != organization_id:
        raise _bad_report(f"asked for organisation {organization_id}, got {page.organization_id}")
    for window in page.data:
        for item in window.line_items:
            for amount in (item.quantity, item.unit_price, item.cost):
                if not fits(amount):
                    raise _bad_report(f"the amount {amount} does not fit {AMOUNT_PLACES} decimal places")


def fits(amount: Decimal) -> bool:
    """True when the amount columns hold this value exactly."""
    exponent = amount.as_tuple().exponent
    assert isinstance(exponent, int)  # finite: checked when parsed
    whole_digits = amount.adjusted() + 1
    return exponent >= -AMOUNT_PLACES and whole_digits <= AMOUNT_DIGITS - AMOUNT_PLACES


def _bad_report(message: str) -> TogetherAPIError:
    return TogetherAPIError(classify_bad_response(200, message))


# ---- storing ------------------------------------------------------------------------------------------

def store_reports(
    reports: Sequence[MonthReport], name: str, key_ids: Sequence[int], now: datetime, poll: PollReport
) -> None:
    """Store one organisation's months; link its keys to it."""
    organization = _organization(reports[0].organization_id, name, now)
    for key_id in key_ids:
        OrganizationKey.objects.update_or_create(
            key_id=key_id, defaults={"organization": organization, "seen_at": now}
        )
    for report in reports:
        for outcome, n in store_month(organization, report, now).items():
            poll.count(f"windows_{outcome}", n)
    Organization.objects.filter(pk=organization.pk).update(last_polled_at=now)
    poll.count("organizations")


def _organization(organization_id: str, name: str, now: datetime) -> Organization:
    organization, created = Organization.objects.get_or_create(
        organization_id=organization_id, defaults={"name": name[:200], "first_seen": now, "last_seen": now}
    )
    if not created:
        # A name is kept when this poll's whoami did not give one.
        fields = {"last_seen": now, **({"name": name[:200]} if name else {})}
        Organization.objects.filter(pk=organization.pk).update(**fields)
    return organization


def store_month(organization: Organization, report: MonthReport, now: datetime) -> Counter[str]:
    """Store a complete month: new windows added, changed ones replaced, vanished ones removed."""
    start, end = month_bounds(report.month)
    stored = {
        row.start_time: row
        for row in BillingWindow.objects.filter(
            organization=organization, granularity=GRANULARITY, start_time__gte=start, start_time__lt=end
        )
    }
    outcomes: Counter[str] = Counter()
    seen: set[datetime] = set()
    touched: set[datetime] = set()  # UTC days whose items changed
    for window in report.windows:
        if not start <= window.start_time < end or window.start_time in seen:
            outcomes["ignored"] += 1  # not this month's, or the same window twice in one report
            continue
        seen.add(window.start_time)
        digest = window_digest(window)
        row = stored.get(window.start_time)
        if row is not None and row.digest == digest:
            outcomes["unchanged"] += 1
            continue
        outcome = replace_window(organization, window, digest, now)
        outcomes[outcome] += 1
        if outcome != "unchanged":
            touched.add(day_of(window.start_time))
    for start_time, row in stored.items():
        # A finished window the complete report no longer has was revised down to nothing.
        if start_time not in seen:
            BillingWindow.objects.filter(pk=row.pk, digest=row.digest).delete()
            outcomes["removed"] += 1
            touched.add(day_of(start_time))
    summarize_days(organization, touched)
    _record_month(organization, report, len(seen), now)
    return outcomes


@transaction.atomic
def replace_window(
    organization: Organization, window: types.BillingWindow, digest: str, now: datetime
) -> str:
    """Store one window and its items in one transaction: "added", "revised" or "unchanged"."""
    fields = {
        "end_time": window.end_time,
        "date": window.date[:10],
        "digest": digest,
        "cost": sum((item.cost for item in window.line_items), Decimal(0)),
        "fetched_at": now,
    }
    row, created = BillingWindow.objects.select_for_update().get_or_create(
        organization=organization, granularity=GRANULARITY, start_time=window.start_time, defaults=fields
    )
    if not created:
        if row.digest == digest:
            return "unchanged"  # another run stored the same answer meanwhile
        BillingLineItem.objects.filter(window=row).delete()
        BillingWindow.objects.filter(pk=row.pk).update(
            **fields, revisions=row.revisions + 1, revised_at=now
        )
    BillingLineItem.objects.bulk_create(line_items(row, organization, window))
    return "added" if created else "revised"


def line_items(
    row: BillingWindow, organization: Organization, window: types.BillingWindow
) -> list[BillingLineItem]:
    return [
        BillingLineItem(
            window=row,
            organization=organization,
            start_time=window.start_time,
            end_time=window.end_time,
            product_name=item.product_name[:200],
            quantity=item.quantity,
            unit_price=item.unit_price,
            cost=item.cost,
            pricing_dimensions=dict(item.pricing_dimensions),
            attributes=dict(item.attributes),
            applied_credit=(item.applied_credit or "")[:16],
            identity=identity,
            raw=dict(item.raw),
        )
        for item, identity in zip(window.line_items, identities(window), strict=True)
    ]


def day_of(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def summarize_days(organization: Organization, days: Iterable[datetime]) -> None:
    """Rebuild the organisation's BillingDay rows of these UTC days from their stored line items."""
    for day in sorted(days):
        with transaction.atomic():
            # One writer per organisation at a time: two overlapping polls must not both insert a day.
            Organization.objects.select_for_update().filter(pk=organization.pk).first()
            BillingDay.objects.filter(organization=organization, day=day).delete()
            BillingDay.objects.bulk_create(_day_rows(organization, day))


def _day_rows(organization: Organization, day: datetime) -> list[BillingDay]:
    items = BillingLineItem.objects.filter(
        organization=organization, start_time__gte=day, start_time__lt=day + timedelta(days=1)
    )
    lines = items.values_list("product_name", "pricing_dimensions", "attributes", "quantity", "cost")
    return day_rows(BillingDay, organization.pk, day, lines)


TOKEN_FIELDS = {"input": "input_tokens", "cached_input": "cached_input_tokens", "output": "output_tokens"}


def day_rows(
    model: type[BillingDay], organization_id: int, day: datetime, lines: Iterable[Sequence[Any]]
) -> list[BillingDay]:
    """A day's lines (product, dimensions, attributes, quantity, cost) summed into BillingDay rows of
    `model` (the migration that made the table passes its historical model)."""
    rows: dict[str, BillingDay] = {}
    for name, dimensions, attributes, quantity, cost in lines:
        line = product_of(name, dimensions or {}, attributes or {})
        if line.charge:
            resource = {str(k): str(v) for part in (dimensions, attributes) for k, v in (part or {}).items()}
            key = _sha256(["charge", name, resource])
        else:
            resource, key = {}, _sha256(["model", line.model])
        row = rows.get(key)
        if row is None:
            zero = Decimal(0)
            row = rows[key] = model(
                organization_id=organization_id, day=day, model=line.model,
                product_name=name if line.charge else "", resource=resource, group_key=key,
                input_tokens=zero, cached_input_tokens=zero, output_tokens=zero, quantity=zero, cost=zero,
            )
        row.quantity += quantity
        row.cost += cost
        if line.token_type:
            field_name = TOKEN_FIELDS[line.token_type]
            setattr(row, field_name, getattr(row, field_name) + quantity)
        row.unit = "tokens" if line.token_type else unit_of(name)
    return list(rows.values())


def _record_month(organization: Organization, report: MonthReport, windows: int, now: datetime) -> None:
    start, end = month_bounds(report.month)
    cost = sum(
        (w.cost for w in BillingWindow.objects.filter(
            organization=organization, granularity=GRANULARITY, start_time__gte=start, start_time__lt=end
        ).only("cost")),
        Decimal(0),
    )
    BillingMonth.objects.update_or_create(
        organization=organization,
        month=report.month,
        granularity=GRANULARITY,
        defaults={
            "fetched_at": now,
            "windows": windows,
            "cost": cost,
            "currency": report.currency[:3] or "USD",
            "earliest_window_start": report.earliest_window_start,
            "latest_window_end": report.latest_window_end,
        },
    )


# ---- identities -----------------------------------------------------------------------------------------

def _text(amount: Decimal) -> str:
    """One spelling per value: "0.880" and "0.88" are the same price."""
    text = format(amount.normalize(), "f")
    return "0" if text in ("-0", "0") else text


def _sha256(parts: object) -> str:
    encoded = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return hashlib.sha256(encoded).hexdigest()


def identities(window: types.BillingWindow) -> list[str]:
    """What names each line within the window: its window, product, dimensions, attributes and price.

    The price is part of it because a price change within a window gives two lines that differ only
    there; a line repeated exactly is told apart by its ordinal among its equals.
    """
    found: list[str] = []
    repeats: Counter[str] = Counter()
    for item in window.line_items:
        base = _sha256([
            window.start_time.isoformat(), window.end_time.isoformat(), item.product_name,
            dict(item.pricing_dimensions), dict(item.attributes), _text(item.unit_price),
        ])
        found.append(_sha256([base, repeats[base]]))
        repeats[base] += 1
    return found


def window_digest(window: types.BillingWindow) -> str:
    """The window's content: its end and, per line, identity, quantity, cost and credit."""
    lines = sorted(
        [identity, _text(item.quantity), _text(item.cost), item.applied_credit or ""]
        for item, identity in zip(window.line_items, identities(window), strict=True)
    )
    return _sha256([window.end_time.isoformat(), window.date, lines])
