"""poll_models: GET /models per key, upsert ModelInfo by exact id, record what changed since the last poll."""
from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from together_dash.catalog.models import PRICE_FIELDS, RECENT_USE, CatalogVersion, ModelChange, ModelInfo
from together_dash.catalog.services import successor_for
from together_dash.catalog.signals import catalog_changed
from together_dash.pollers.fanout import FanOutConfig, KeyRef, fan_out, key_refs
from together_dash.pollers.runs import PollReport, active_keys, keys_due, record_outcomes, run_poller
from together_dash.together.client import AsyncTogetherClient
from together_dash.together.types import Model
from together_dash.traffic.models import RequestLog

POLLER = "poll_models"
# A model stays "new" this long after it first appeared.
NEW_FOR = timedelta(days=7)
# Removed models are re-checked for traffic and successors this long after removal.
WATCH_REMOVED_FOR = timedelta(days=30)
PRICE_PLACES = Decimal("0.000001")


def poll_models(token: str | None = None, config: FanOutConfig | None = None) -> PollReport:
    """Poll the catalog with every active key and apply the union of what they see."""
    return run_poller(POLLER, lambda report: _poll(report, config), token)


def _poll(report: PollReport, config: FanOutConfig | None) -> None:
    now = timezone.now()
    keys, report.skipped = keys_due(POLLER, active_keys(), now)
    refs, broken = key_refs(keys)
    outcomes = broken + fan_out(refs, _fetch_models, config)
    record_outcomes(POLLER, outcomes, report)
    lists = [outcome.value for outcome in outcomes if outcome.ok and outcome.value is not None]
    # Keys of different organizations may see different catalogs: a model is only called removed when
    # every key that can answer did. A key refused for good (401) cannot hold that up.
    complete = not report.skipped and all(o.ok or not o.error.retryable for o in outcomes if o.error)
    if lists:
        apply_catalog(lists, now, report, detect_removals=complete)


async def _fetch_models(client: AsyncTogetherClient, key: KeyRef) -> list[Model]:
    return (await client.list_models()).data


def apply_catalog(
    lists: Iterable[list[Model]],
    now: datetime,
    report: PollReport | None = None,
    detect_removals: bool = True,
) -> None:
    """Upsert every model seen, mark the missing ones removed, and write one change row per event."""
    report = report or PollReport(poller=POLLER)
    events_before = _events(report)
    seen: dict[str, Model] = {}
    for models in lists:
        for model in models:
            seen.setdefault(model.id, model)
    existing = {row.model_id: row for row in ModelInfo.objects.all()}
    baseline = not existing
    unchanged: list[int] = []
    for model_id, model in seen.items():
        row, fields = existing.get(model_id), model_fields(model)
        if row is None:
            _add(model.id, fields, now, baseline, report)
        elif row.is_removed or _differs(row, fields):
            _refresh(row, fields, now, report)
        else:
            unchanged.append(row.pk)
    ModelInfo.objects.filter(pk__in=unchanged).update(last_seen=now)
    # An empty catalog from every key is an upstream fault, not the end of every model.
    if seen and detect_removals:
        for row in existing.values():
            if row.model_id not in seen and not row.is_removed:
                _remove(row, now, report)
    _age_new_models(now)
    _watch_removed(now)
    report.count("models", len(seen))
    if _events(report) != events_before or baseline:
        # Every process re-reads prices on its next batch; costs logged as unknown can be filled in.
        CatalogVersion.bump()
        transaction.on_commit(lambda: catalog_changed.send_robust(sender=ModelInfo), robust=True)


def _events(report: PollReport) -> int:
    return sum(report.counts.get(kind, 0) for kind in ("added", "changed", "removed", "restored"))


def model_fields(model: Model) -> dict[str, Any]:
    """ModelInfo field values from one GET /models entry."""
    pricing = model.pricing
    fields: dict[str, Any] = {
        "display_name": (model.display_name or "")[:255],
        "type": (model.type or "")[:32],
        "organization": (model.organization or "")[:100],
        "context_length": model.context_length if model.context_length and model.context_length > 0 else None,
        "upstream_created": datetime.fromtimestamp(model.created, UTC) if model.created else None,
        "raw": dict(model.raw),
    }
    for name in PRICE_FIELDS:
        fields[f"pricing_{name}"] = _price(getattr(pricing, name) if pricing else None)
    return fields


def _price(value: float | None) -> Decimal | None:
    if value is None:
        return None
    try:
        return Decimal(str(value)).quantize(PRICE_PLACES)
    except InvalidOperation:
        return None


@transaction.atomic
def _add(model_id: str, fields: dict[str, Any], now: datetime, baseline: bool, report: PollReport) -> None:
    # The first poll of an empty catalog is a baseline: those models are not news.
    state = ModelInfo.State.AVAILABLE if baseline else ModelInfo.State.NEW
    defaults = {**fields, "state": state, "first_seen": now, "last_seen": now}
    row, created = ModelInfo.objects.get_or_create(model_id=model_id, defaults=defaults)
    if created and not baseline:
        _event(row, ModelChange.Kind.ADDED, now, after=row.tracked_values())
        report.count("added")


def _differs(row: ModelInfo, fields: dict[str, Any]) -> bool:
    return any(getattr(row, name) != value for name, value in fields.items())


@transaction.atomic
def _refresh(row: ModelInfo, fields: dict[str, Any], now: datetime, report: PollReport) -> None:
    before = row.tracked_values()
    if row.is_removed:
        _restore(row, now, report)
    # Conditional on the values this poll read: when two polls overlap, only one records the change.
    updated = ModelInfo.objects.filter(_still(before), pk=row.pk).update(**fields, last_seen=now)
    for name, value in fields.items():
        setattr(row, name, value)
    after = row.tracked_values()
    if updated and before != after:
        _event(row, ModelChange.Kind.CHANGED, now, before=before, after=after)
        report.count("changed")


def _still(tracked: dict[str, Any]) -> Q:
    """A filter matching a row whose tracked values are still these."""
    condition = Q()
    for name, value in tracked.items():
        if value is None:
            condition &= Q(**{f"{name}__isnull": True})
        else:
            condition &= Q(**{name: value if name == "context_length" else Decimal(value)})
    return condition


def _restore(row: ModelInfo, now: datetime, report: PollReport) -> None:
    restored = ModelInfo.objects.filter(pk=row.pk, state=ModelInfo.State.REMOVED).update(
        state=ModelInfo.State.AVAILABLE, removed_at=None, successor=""
    )
    if restored:
        _event(row, ModelChange.Kind.RESTORED, now, after=row.tracked_values())
        report.count("restored")


@transaction.atomic
def _remove(row: ModelInfo, now: datetime, report: PollReport) -> None:
    removed = ModelInfo.objects.filter(pk=row.pk).exclude(state=ModelInfo.State.REMOVED).update(
        state=ModelInfo.State.REMOVED, removed_at=now
    )
    if removed:
        _event(row, ModelChange.Kind.REMOVED, now, before=row.tracked_values())
        report.count("removed")


def _event(row: ModelInfo, kind: str, now: datetime, **values: dict[str, Any]) -> None:
    ModelChange.objects.create(model=row, kind=kind, at=now, **values)


def _age_new_models(now: datetime) -> None:
    ModelInfo.objects.filter(state=ModelInfo.State.NEW, first_seen__lt=now - NEW_FOR).update(
        state=ModelInfo.State.AVAILABLE
    )


def _watch_removed(now: datetime) -> None:
    """For recently removed models: when our traffic last used them, and the successor to suggest."""
    recently = now - WATCH_REMOVED_FOR
    removed = list(ModelInfo.objects.filter(state=ModelInfo.State.REMOVED, removed_at__gte=recently))
    if not removed:
        return
    candidates = list(ModelInfo.objects.exclude(state=ModelInfo.State.REMOVED))
    for row in removed:
        successor = successor_for(row, candidates)
        values = {
            "last_used_at": last_used(row.model_id, now),
            "successor": successor.model_id if successor else "",
        }
        if any(getattr(row, name) != value for name, value in values.items()):
            ModelInfo.objects.filter(pk=row.pk).update(**values)


def last_used(model_id: str, now: datetime) -> datetime | None:
    """Our latest request for this model within RECENT_USE (indexed on model_requested, created_at)."""
    return (
        RequestLog.objects.filter(model_requested=model_id, created_at__gte=now - RECENT_USE)
        .order_by("-created_at")
        .values_list("created_at", flat=True)
        .first()
    )
