"""Billing usage for generated traffic: the report Together would send for it, stored by the poller's code.

The keys that carry traffic are split between `organizations` organisations and linked to them as the
billing poller links them. Every finished hour of the hour rollups is billed by the simulator's own
biller (simulator.billing: token lines per model at Together's prices, dedicated endpoint minutes), so
the windows have exactly the shape and amounts the simulator's GET /v1/billing/usage gives; they are
then stored by billing.polling.store_month, as a poll would store them. Two differences are made on
purpose, so a reconciliation of the result has more to say than "matched": the first organisation's
busiest model is billed BYPASS_SHARE more tokens than the dashboard saw (traffic that bypassed it),
and that organisation runs a dedicated endpoint all along (minutes with no request behind them).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.db.models import Sum
from django.utils import timezone

from together_dash.billing.models import Organization, OrganizationKey
from together_dash.billing.polling import MonthReport, month_bounds, store_month
from together_dash.simulator import billing as biller
from together_dash.simulator import catalog as simulator_catalog
from together_dash.simulator.endpoints import HARDWARE_BY_ID, Endpoint
from together_dash.simulator.state import SimulatorState
from together_dash.together import types
from together_dash.traffic.models import UsageHour

ORGANIZATION_PREFIX = "org_generated_"
BYPASS_SHARE = Decimal("0.03")
ENDPOINT_HARDWARE = "2x_nvidia_a100_80gb_sxm"
HOUR = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class BillingUsageResult:
    organizations: int
    windows: int
    line_items: int


def generate_billing_usage(organizations: int = 1, now: datetime | None = None) -> BillingUsageResult:
    """Bill every finished hour of the generated traffic and store it as the billing poller would."""
    now = (now or timezone.now()).astimezone(UTC)
    until = now.replace(minute=0, second=0, microsecond=0)
    key_ids = sorted(
        set(UsageHour.objects.exclude(upstream_key=None).values_list("upstream_key_id", flat=True))
    )
    org_ids = [f"{ORGANIZATION_PREFIX}{n + 1}" for n in range(max(1, organizations))]
    state = SimulatorState()
    state.clock.freeze(now.timestamp())
    by_key = {key_id: org_ids[i % len(org_ids)] for i, key_id in enumerate(key_ids)}
    _bill_tokens(state, by_key, until, bypassed=_busiest_model(key_ids, by_key, org_ids[0]))
    first = UsageHour.objects.order_by("bucket").values_list("bucket", flat=True).first()
    if first is not None:
        _run_endpoint(state, org_ids[0], first, until)
    windows = items = 0
    for org_id in org_ids:
        organization = _organization(org_id, [k for k, o in by_key.items() if o == org_id], now)
        for month in months_between(first or until, now):
            found = tuple(
                types.BillingWindow.from_json(window)
                for window in biller.windows(state, month, "hour", org_id)
            )
            report = MonthReport(
                month, org_id, "USD", found,
                found[0].start_time if found else None, found[-1].end_time if found else None,
            )
            store_month(organization, report, now)
            windows += len(found)
            items += sum(len(window.line_items) for window in found)
        Organization.objects.filter(pk=organization.pk).update(last_polled_at=now)
    return BillingUsageResult(len(org_ids), windows, items)


def months_between(first: datetime, last: datetime) -> list[str]:
    """Every month (YYYY-MM, UTC) from the one holding `first` to the one holding `last`."""
    months, month = [], f"{first.astimezone(UTC):%Y-%m}"
    while month <= f"{last.astimezone(UTC):%Y-%m}":
        months.append(month)
        month = f"{month_bounds(month)[1]:%Y-%m}"
    return months


def _busiest_model(key_ids: list[int], by_key: dict[int, str], org_id: str) -> str:
    mine = [key_id for key_id in key_ids if by_key[key_id] == org_id]
    busiest = (
        UsageHour.objects.filter(upstream_key_id__in=mine, model__in=simulator_catalog.BY_ID)
        .values("model").annotate(tokens=Sum("prompt_tokens")).order_by("-tokens").first()
    )
    return busiest["model"] if busiest else ""


def _bill_tokens(state: SimulatorState, by_key: dict[int, str], until: datetime, bypassed: str) -> None:
    """Each hour's tokens per model on its organisation's bill, at the simulator catalog's prices."""
    hours = (
        UsageHour.objects.filter(upstream_key_id__in=list(by_key), bucket__lt=until)
        .values("bucket", "upstream_key_id", "model")
        .annotate(prompt=Sum("prompt_tokens"), completion=Sum("completion_tokens"))
        .order_by()
    )
    for row in hours:
        model = simulator_catalog.BY_ID.get(row["model"])
        if model is None or not (row["prompt"] or row["completion"]):
            continue  # an id Together does not know answered 404: nothing billed
        prompt, completion = row["prompt"] or 0, row["completion"] or 0
        if row["model"] == bypassed and by_key[row["upstream_key_id"]] == by_key[min(by_key)]:
            prompt, completion = (int(tokens * (1 + BYPASS_SHARE)) for tokens in (prompt, completion))
        charges = biller.token_charges(model, prompt, completion)
        if model.type == "image":
            charges = biller.image_charges(model, max(1, completion))
        state.ledger(by_key[row["upstream_key_id"]]).record(row["bucket"].timestamp(), charges)


def _run_endpoint(state: SimulatorState, org_id: str, since: datetime, until: datetime) -> None:
    """A dedicated endpoint STARTED from the first generated hour to the last finished one."""
    hardware = HARDWARE_BY_ID[ENDPOINT_HARDWARE]
    endpoint = Endpoint(
        id="endpoint-generated-1", name="generated/llama-dedicated", display_name="Generated endpoint",
        model=simulator_catalog.DEFAULT_CHAT_MODEL, hardware=hardware.id, owner="generated",
        created=since.timestamp(), min_replicas=1, max_replicas=1, inactive_timeout=None,
        cents_per_minute=hardware.cents_per_minute, organization_id=org_id,
        history=[(since.timestamp(), "STARTED"), (until.timestamp(), "STOPPED")],
    )
    state.endpoints.endpoints[endpoint.id] = endpoint


def _organization(org_id: str, key_ids: list[int], now: datetime) -> Organization:
    organization, _ = Organization.objects.get_or_create(
        organization_id=org_id, defaults={"name": f"Generated {org_id.removeprefix(ORGANIZATION_PREFIX)}"}
    )
    for key_id in key_ids:
        OrganizationKey.objects.update_or_create(
            key_id=key_id, defaults={"organization": organization, "seen_at": now}
        )
    return organization
