"""poll_endpoints: every active key's dedicated endpoints (GET /v1/endpoints) and the hardware price list
(GET /v1/hardware), upserted by their Together ids, with each state change the poll sees.

Keys of one project list the same endpoints: the union is stored once. An endpoint the key that last
listed it no longer lists, in an answer that succeeded, was deleted (our DELETED); a key that failed
says nothing about its endpoints, so they keep their state until a key answers.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from together_dash.billing.polling import fits
from together_dash.catalog.models import CatalogVersion
from together_dash.endpoints.models import (
    BOOTING,
    DELETED,
    Endpoint,
    EndpointStateChange,
    Hardware,
    usd_per_minute,
)
from together_dash.pollers.fanout import FanOutConfig, KeyRef, fan_out, key_refs
from together_dash.pollers.runs import PollReport, active_keys, keys_due, record_outcomes, run_poller
from together_dash.together import types
from together_dash.together.client import AsyncTogetherClient, TogetherAPIError
from together_dash.together.errors import classify_bad_response

POLLER = "poll_endpoints"


@dataclass(frozen=True, slots=True)
class Listing:
    """What one key saw: its dedicated endpoints and the hardware price list."""

    endpoints: list[types.DedicatedEndpoint]
    hardware: list[types.Hardware]


def poll_endpoints(token: str | None = None, config: FanOutConfig | None = None) -> PollReport:
    """Fetch and store every active key's dedicated endpoints and the hardware they run on."""
    return run_poller(POLLER, lambda report: _poll(report, config), token)


def _poll(report: PollReport, config: FanOutConfig | None) -> None:
    now = timezone.now()
    keys, report.skipped = keys_due(POLLER, active_keys(), now)
    refs, broken = key_refs(keys)
    outcomes = broken + fan_out(refs, _fetch, config)
    record_outcomes(POLLER, outcomes, report)
    listings = {o.key.id: o.value for o in outcomes if o.ok and o.value is not None}
    hardware = [item for listing in listings.values() for item in listing.hardware]
    report.count("hardware", store_hardware(hardware, now))
    for outcome, n in store_endpoints(listings, now).items():
        report.count(outcome, n)


async def _fetch(client: AsyncTogetherClient, key: KeyRef) -> Listing:
    endpoints = (await client.list_endpoints()).data
    hardware = (await client.list_hardware()).data
    for item in hardware:
        if item.cents_per_minute is not None and not fits(usd_per_minute(item.cents_per_minute)):
            message = f"the price of {item.id} ({item.cents_per_minute} cents) cannot be stored exactly"
            raise TogetherAPIError(classify_bad_response(200, message))
    return Listing(endpoints, hardware)


# ---- hardware -----------------------------------------------------------------------------------------

def store_hardware(listed: Sequence[types.Hardware], now: datetime) -> int:
    """Upsert each priced configuration by id; one without a price is skipped (never priced at $0)."""
    stored: set[str] = set()
    for item in listed:
        if item.id in stored or item.cents_per_minute is None:
            continue
        stored.add(item.id)
        Hardware.objects.update_or_create(
            hardware_id=item.id[:100],
            defaults={
                "cents_per_minute": item.cents_per_minute,
                "price_per_minute_usd": usd_per_minute(item.cents_per_minute),
                "gpu_type": (item.gpu_type or "")[:100],
                "gpu_link": (item.gpu_link or "")[:50],
                "gpu_memory": item.gpu_memory,
                "gpu_count": item.gpu_count,
                "updated_at": item.updated_at,
                "last_seen": now,
            },
        )
    return len(stored)


# ---- endpoints ----------------------------------------------------------------------------------------

def endpoint_fields(item: types.DedicatedEndpoint) -> dict[str, Any]:
    """Endpoint values from an API endpoint object (the state is handled apart: it has a history)."""
    return {
        "name": item.name[:255],
        "display_name": (item.display_name or "")[:255],
        "model": item.model[:255],
        "hardware": item.hardware[:100],
        "owner": (item.owner or "")[:200],
        "min_replicas": item.min_replicas,
        "max_replicas": item.max_replicas,
        "inactive_timeout": item.inactive_timeout,
        "created_at": item.created_at,
        "raw": dict(item.raw),
    }


def store_endpoints(listings: dict[int, Listing], now: datetime) -> dict[str, int]:
    """Upsert what the keys listed, record state changes, and mark what a key stopped listing as deleted."""
    counts = {"endpoints": 0, "state_changes": 0, "deleted": 0}
    names_before = set(Endpoint.objects.values_list("name", flat=True))
    seen: dict[str, tuple[int, types.DedicatedEndpoint]] = {}
    for key_id, listing in listings.items():
        for item in listing.endpoints:
            seen.setdefault(item.id, (key_id, item))
    existing = Endpoint.objects.in_bulk(list(seen), field_name="endpoint_id")
    for endpoint_id, (key_id, item) in seen.items():
        counts["state_changes"] += upsert_endpoint(existing.get(endpoint_id), key_id, item, now)
    counts["endpoints"] = len(seen)
    answered = Endpoint.objects.listed().filter(upstream_key_id__in=list(listings))
    vanished = answered.exclude(endpoint_id__in=list(seen))
    for endpoint in vanished:
        counts["deleted"] += change_state(endpoint, DELETED, now, gone=True)
    if set(Endpoint.objects.values_list("name", flat=True)) != names_before:
        # Requests to an endpoint cost nothing per token: every process's price table must learn its name.
        CatalogVersion.bump()
    return counts


def upsert_endpoint(row: Endpoint | None, key_id: int, item: types.DedicatedEndpoint, now: datetime) -> int:
    """Create or update one endpoint by its Together id; returns how many state changes it recorded."""
    fields = {**endpoint_fields(item), "upstream_key_id": key_id, "last_seen": now}
    state = item.state[:10]
    if row is None:
        with transaction.atomic():
            row, created = Endpoint.objects.get_or_create(
                endpoint_id=item.id[:100],
                defaults={
                    **fields, "state": state, "state_since": now, "first_seen": now,
                    "booting_since": now if state in BOOTING else None,
                },
            )
            if created:
                EndpointStateChange.objects.create(endpoint=row, state=state, at=now)
                return 1
    Endpoint.objects.filter(pk=row.pk).update(**fields)
    if row.state != state or row.gone_at is not None:
        return change_state(row, state, now)
    return 0


def change_state(row: Endpoint, state: str, now: datetime, gone: bool = False) -> int:
    """Move an endpoint to a new state, claimed with a conditional UPDATE; 1 when this call moved it."""
    booting_since = (row.booting_since or now) if state in BOOTING and row.state in BOOTING else None
    if state in BOOTING and booting_since is None:
        booting_since = now
    with transaction.atomic():
        moved = Endpoint.objects.filter(pk=row.pk, state=row.state, state_since=row.state_since).update(
            state=state, state_since=now, booting_since=booting_since, gone_at=now if gone else None
        )
        if not moved:
            return 0
        EndpointStateChange.objects.create(
            endpoint=row, state=state, previous_state=row.state, at=now, previous_seen_at=row.last_seen
        )
    return 1
