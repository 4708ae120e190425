"""poll_fine_tunes: list jobs per key, upsert them by ft- id, fetch details and events of those that move."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from together_dash.jobs.models import FineTuneEvent, FineTuneJob, event_digest
from together_dash.pollers.fanout import FanOutConfig, KeyRef, fan_out, key_refs
from together_dash.pollers.runs import PollReport, active_keys, keys_due, record_outcomes, run_poller
from together_dash.together import types
from together_dash.together.client import AsyncTogetherClient, TogetherAPIError
from together_dash.together.errors import ClassifiedError

POLLER = "poll_fine_tunes"
# Details and events cost two calls per job: a key with a long history catches up over several polls.
MAX_JOB_SYNCS_PER_KEY = 20


@dataclass(slots=True)
class JobSync:
    """Details and events of one job fetched this poll, or why they could not be."""

    detail: types.FineTuneJob | None = None
    events: list[types.FineTuneEvent] | None = None
    error: ClassifiedError | None = None


@dataclass(slots=True)
class KeyFineTunes:
    """What one key's calls returned: the job list, and the jobs synced in full."""

    listed: list[types.FineTuneJob]
    synced: dict[str, JobSync] = field(default_factory=dict)


def poll_fine_tunes(token: str | None = None, config: FanOutConfig | None = None) -> PollReport:
    """Poll fine-tune jobs with every active key."""
    return run_poller(POLLER, lambda report: _poll(report, config), token)


def stuck_threshold() -> timedelta:
    return timedelta(seconds=settings.FINETUNE_STUCK_AFTER)


def _poll(report: PollReport, config: FanOutConfig | None) -> None:
    now = timezone.now()
    keys, report.skipped = keys_due(POLLER, active_keys(), now)
    refs, broken = key_refs(keys)
    synced_status = dict(FineTuneJob.objects.values_list("job_id", "events_synced_status"))
    # Keys of one organization list the same jobs: each job is fetched by the first key that sees it.
    claimed: set[str] = set()

    async def fetch(client: AsyncTogetherClient, key: KeyRef) -> KeyFineTunes:
        return await _fetch_key(client, synced_status, claimed)

    outcomes = broken + fan_out(refs, fetch, config)
    record_outcomes(POLLER, outcomes, report)
    listings = [(o.key.id, o.value) for o in outcomes if o.ok and o.value is not None]
    # One read for every key: keys of one organization list the same jobs.
    ids = {job.id for _, listing in listings for job in listing.listed}
    existing = FineTuneJob.objects.in_bulk(ids, field_name="job_id")
    for key_id, listing in listings:
        apply_key_fine_tunes(key_id, listing, existing, now, report)
    report.count("jobs", len(ids))
    mark_stuck(now, report)


async def _fetch_key(
    client: AsyncTogetherClient, synced_status: dict[str, str], claimed: set[str]
) -> KeyFineTunes:
    listed = (await client.list_fine_tunes()).data
    todo = [job.id for job in listed if _wants_sync(job, synced_status) and job.id not in claimed]
    todo = todo[:MAX_JOB_SYNCS_PER_KEY]
    claimed.update(todo)
    synced = await asyncio.gather(*(_sync_job(client, job_id) for job_id in todo))
    return KeyFineTunes(listed=listed, synced=dict(zip(todo, synced, strict=True)))


def _wants_sync(job: types.FineTuneJob, synced_status: dict[str, str]) -> bool:
    """Not finished, or changed since its events were last fetched (new jobs included)."""
    return not job.is_terminal or synced_status.get(job.id) != job.status


async def _sync_job(client: AsyncTogetherClient, job_id: str) -> JobSync:
    detail, events = await asyncio.gather(
        client.get_fine_tune(job_id), client.list_fine_tune_events(job_id), return_exceptions=True
    )
    for result in (detail, events):
        if isinstance(result, TogetherAPIError):
            return JobSync(error=result.classified)
        if isinstance(result, BaseException):
            raise result
    return JobSync(detail=detail.data, events=events.data)


def apply_key_fine_tunes(
    key_id: int, data: KeyFineTunes, existing: dict[str, FineTuneJob], now: datetime, report: PollReport
) -> None:
    """Upsert the jobs one key listed, with the details and events fetched for some of them."""
    for job in data.listed:
        sync = data.synced.get(job.id)
        detail = sync.detail if sync and sync.detail else None
        row = upsert_fine_tune(existing.get(job.id), key_id, detail or job, now, with_raw=detail is not None)
        existing[job.id] = row
        if sync is not None and sync.error is not None:
            report.count("job_errors")
            continue
        if sync is not None and sync.events is not None:
            report.count("events_added", save_events(row, sync.events, (detail or job).status or row.status))


def fine_tune_fields(job: types.FineTuneJob) -> dict[str, Any]:
    """FineTuneJob values from an API job object; None where the object did not say."""
    return {
        "status": job.status,
        "base_model": _cut(job.model, 255),
        "output_model": _cut(job.model_output_name, 255),
        "training_file": _cut(job.training_file, 100),
        "validation_file": _cut(job.validation_file, 100),
        "n_epochs": job.n_epochs,
        "epochs_completed": job.epochs_completed,
        "total_steps": job.total_steps,
        "steps_completed": job.steps_completed,
        "token_count": job.token_count,
        "param_count": job.param_count,
        "total_price": job.total_price,
        "progress_pct": round(job.progress_percent, 2) if job.progress_percent is not None else None,
        "seconds_remaining": job.seconds_remaining,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "started_at": job.started_at,
    }


def _cut(value: str | None, length: int) -> str | None:
    return value[:length] if value is not None else None


def upsert_fine_tune(
    row: FineTuneJob | None, key_id: int, job: types.FineTuneJob, now: datetime, with_raw: bool = False
) -> FineTuneJob:
    """Create or update the job; unknown (None) values never overwrite known ones."""
    fields = {name: value for name, value in fine_tune_fields(job).items() if value is not None}
    if with_raw:
        fields["raw"] = {name: value for name, value in job.raw.items() if name != "events"}
    if row is None:
        row = _create(key_id, job, fields, now)
        if row is not None:
            return row
        row = FineTuneJob.objects.get(job_id=job.id)
    changes = _changes(row, fields, now)
    if changes:
        FineTuneJob.objects.filter(pk=row.pk).update(**changes)
        for name, value in changes.items():
            setattr(row, name, value)
    return row


def _create(key_id: int, job: types.FineTuneJob, fields: dict[str, Any], now: datetime) -> FineTuneJob | None:
    """Create the row, or None when a concurrent poll created it first."""
    status = fields.get("status", "")
    # Pending since the job was last updated upstream, not since we first saw it: a job found
    # already queued for hours is stuck now, not in an hour.
    since = min(job.updated_at or job.created_at or now, now)
    defaults = {
        **fields,
        "status": status,
        "upstream_key_id": key_id,
        "first_seen": now,
        "status_changed_at": since,
        "finished_at": (job.updated_at or now) if job.is_terminal else None,
    }
    row, created = FineTuneJob.objects.get_or_create(job_id=job.id, defaults=defaults)
    return row if created else None


def _changes(row: FineTuneJob, fields: dict[str, Any], now: datetime) -> dict[str, Any]:
    changes = {name: value for name, value in fields.items() if getattr(row, name) != value}
    if "status" in changes:
        changes["status_changed_at"] = now
        changes["stuck_since"] = None
        if changes["status"] in types.FineTuneStatus.TERMINAL and row.finished_at is None:
            changes["finished_at"] = now
    return changes


@transaction.atomic
def save_events(row: FineTuneJob, events: list[types.FineTuneEvent], status: str) -> int:
    """Insert the events not stored yet (identified by created_at, type and message); return how many."""
    known = set(row.events.values_list("digest", flat=True))
    new = {}
    for event in events:
        instance = _event_row(row, event)
        if instance.digest not in known:
            new.setdefault(instance.digest, instance)
    FineTuneEvent.objects.bulk_create(list(new.values()), ignore_conflicts=True)
    values: dict[str, Any] = {"events_synced_status": status}
    error = _latest_error(events)
    if error and error != row.error_message:
        values["error_message"] = error
    FineTuneJob.objects.filter(pk=row.pk).exclude(**values).update(**values)
    return len(new)


def _event_row(row: FineTuneJob, event: types.FineTuneEvent) -> FineTuneEvent:
    type_normalized = (event.type_normalized or "")[:60]
    message = event.message or ""
    return FineTuneEvent(
        job=row,
        created_at=event.created_at,
        level=(event.level or "")[:20],
        type=(event.type or "")[:60],
        type_normalized=type_normalized,
        message=message,
        step=_event_step(event.step),
        digest=event_digest(event.created_at, type_normalized, message),
    )


def _latest_error(events: list[types.FineTuneEvent]) -> str:
    errors = [event for event in events if _is_error(event)]
    return (errors[-1].message or "")[:1000] if errors else ""


def _is_error(event: types.FineTuneEvent) -> bool:
    """level error, or a job_error / JOB_USER_ERROR type (either case)."""
    return (event.level or "").lower() == "error" or (event.type_normalized or "").endswith("error")


def mark_stuck(now: datetime, report: PollReport) -> None:
    """Flag jobs pending or queued beyond FINETUNE_STUCK_AFTER (claimed once with a conditional UPDATE)."""
    threshold = stuck_threshold()
    newly = FineTuneJob.objects.waiting_too_long(now, threshold).filter(stuck_since__isnull=True).update(
        stuck_since=now
    )
    report.count("stuck_new", newly)
    report.count("stuck", FineTuneJob.objects.waiting_too_long(now, threshold).count())


def _event_step(step: int | None) -> int | None:
    """The training step an event is about, or None: an event about no step carries step 0."""
    return step if step is not None and step > 0 else None
