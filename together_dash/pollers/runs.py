"""One poller run: claim the lease, time it, record the heartbeat and each key's outcome."""
from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db.models import F
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from together_dash.keys.models import TogetherKey
from together_dash.pollers import schedule
from together_dash.pollers.fanout import KeyOutcome
from together_dash.pollers.models import PollerHeartbeat, PollerKeyState
from together_dash.together.redact import redact

logger = logging.getLogger(__name__)

MAX_REPORTED_ERRORS = 20
# Celery limits of every poll task. Each poll bounds its HTTP calls (POLLER_TIMEOUT, POLLER_KEY_DEADLINE);
# these are the backstop, and shorter than the run lease (models.RUN_LEASE).
POLL_LIMITS = {"soft_time_limit": 240, "time_limit": 300}


@dataclass(slots=True)
class PollReport:
    """What one run did, kept on the heartbeat: key counts, per-key errors and poller-specific numbers."""

    poller: str
    keys: int = 0
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    errors: list[dict[str, str]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    claimed: bool = True

    @property
    def all_failed(self) -> bool:
        return self.failed > 0 and self.ok == 0

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n

    def to_dict(self) -> dict[str, Any]:
        return {name: value for name, value in asdict(self).items() if name != "claimed"}

    def summary(self) -> str:
        if not self.claimed:
            return f"{self.poller}: skipped, another run holds the lease"
        numbers = " ".join(f"{name}={value}" for name, value in sorted(self.counts.items()))
        return (
            f"{self.poller}: {self.ok}/{self.keys} keys ok, {self.failed} failed, {self.skipped} skipped"
            + (f"; {numbers}" if numbers else "")
        )


def run_poller(name: str, body: Callable[[PollReport], None], token: str | None = None) -> PollReport:
    """Run body under the poller's lease and record its heartbeat; a second concurrent run is skipped."""
    token = token or f"cmd-{uuid.uuid4()}"
    report = PollReport(poller=name)
    if not PollerHeartbeat.claim(name, token, schedule.interval_for(name)):
        report.claimed = False
        return report
    started = time.perf_counter()
    try:
        body(report)
    except Exception as exc:
        PollerHeartbeat.finish(name, token, _ms(started), report.to_dict(), error=_error_text(exc))
        raise
    error = _all_failed_text(report) if report.all_failed else ""
    PollerHeartbeat.finish(name, token, _ms(started), report.to_dict(), error=error)
    logger.info("%s in %d ms", report.summary(), _ms(started))
    return report


def stale_pollers(now: datetime | None = None) -> list[PollerHeartbeat]:
    """Pollers with no success for twice their interval, leaving out those ops paused in the admin."""
    now = now or timezone.now()
    paused = PeriodicTask.objects.filter(enabled=False).values_list("name", flat=True)
    return [beat for beat in PollerHeartbeat.objects.exclude(name__in=paused) if beat.is_stale_at(now)]


def active_keys() -> list[TogetherKey]:
    return list(TogetherKey.objects.filter(status=TogetherKey.Status.ACTIVE).order_by("id"))


def keys_due(poller: str, keys: Sequence[TogetherKey], now: datetime) -> tuple[list[TogetherKey], int]:
    """Keys not waiting out a 429's reset for this poller, and how many are waiting."""
    waiting = set(
        PollerKeyState.objects.filter(poller=poller, key__in=keys, retry_after__gt=now).values_list(
            "key_id", flat=True
        )
    )
    return [key for key in keys if key.id not in waiting], len(waiting)


def record_outcomes(poller: str, outcomes: Iterable[KeyOutcome[Any]], report: PollReport) -> None:
    """Per-key state (one UPDATE for all successes, one per failure) and the report's counts."""
    now = timezone.now()
    outcomes = list(outcomes)
    PollerKeyState.objects.bulk_create(
        [PollerKeyState(poller=poller, key_id=o.key.id) for o in outcomes], ignore_conflicts=True
    )
    ok_ids = [o.key.id for o in outcomes if o.ok]
    PollerKeyState.objects.filter(poller=poller, key_id__in=ok_ids).update(
        last_success=now, consecutive_failures=0, retry_after=None
    )
    for outcome in outcomes:
        if not outcome.ok:
            _record_failure(poller, outcome, now, report)
    report.keys += len(outcomes)
    report.ok += len(ok_ids)


def _record_failure(poller: str, outcome: KeyOutcome[Any], now: datetime, report: PollReport) -> None:
    error = outcome.error
    assert error is not None
    message = redact(error.message, (outcome.key.secret,))[:500]
    retry_after = None
    if error.category == "rate_limit" and error.retry_after:
        retry_after = now + timedelta(seconds=error.retry_after)
    PollerKeyState.objects.filter(poller=poller, key_id=outcome.key.id).update(
        last_error_at=now,
        last_error=message,
        last_error_kind=error.kind,
        consecutive_failures=F("consecutive_failures") + 1,
        retry_after=retry_after,
    )
    report.failed += 1
    if len(report.errors) < MAX_REPORTED_ERRORS:
        report.errors.append({"key": outcome.key.name, "kind": error.kind, "message": message})
    logger.warning("%s: key %s failed: %s %s", poller, outcome.key.name, error.kind, message)


def _ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


def _error_text(exc: Exception) -> str:
    return redact(f"{type(exc).__name__}: {exc}")[:500]


def _all_failed_text(report: PollReport) -> str:
    first = report.errors[0] if report.errors else {"kind": "", "message": ""}
    return f"all {report.failed} keys failed; first: {first['kind']}: {first['message']}"[:500]
