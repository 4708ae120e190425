"""What a dedicated endpoint cost and served over a time range: the one reader behind the endpoints pages
and the endpoint alerts.

Together bills a dedicated endpoint per minute while it runs, traffic or not (reference §8.4): the cost
of a range is the minutes STARTED within it x the hardware's price per minute x the replicas (the
autoscaling minimum: what runs with no load; more under load, which the listing does not show). Minutes
come from the stored state changes, so they are exact to within one poll interval; our traffic to an
endpoint is what the proxy and ingest recorded with model == its name, read from the rollups.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.db.models import OuterRef, Subquery
from django.utils import timezone

from together_dash.endpoints.models import Endpoint, EndpointStateChange, Hardware
from together_dash.together.types import EndpointState
from together_dash.traffic.rollups import UsageCounts, summed, usage_breakdown

SECONDS_PER_MINUTE = Decimal(60)
MINUTES_PER_HOUR = 60


@dataclass(frozen=True, slots=True)
class EndpointUsage:
    """One endpoint over a range: its time STARTED, what that cost, and the traffic we recorded to it."""

    endpoint: Endpoint
    hardware: Hardware | None
    start: datetime
    end: datetime
    started_seconds: Decimal
    traffic: UsageCounts

    @property
    def price_per_minute(self) -> Decimal | None:
        """USD per minute at the current replicas; None when the hardware's price is unknown."""
        if self.hardware is None:
            return None
        return self.hardware.price_per_minute_usd * self.endpoint.replicas

    @property
    def price_per_hour(self) -> Decimal | None:
        price = self.price_per_minute
        return None if price is None else price * MINUTES_PER_HOUR

    @property
    def started_text(self) -> str:
        return duration_text(self.started_seconds)

    @property
    def started_minutes(self) -> Decimal:
        return self.started_seconds / SECONDS_PER_MINUTE

    @property
    def cost(self) -> Decimal | None:
        price = self.price_per_minute
        return None if price is None else self.started_minutes * price

    @property
    def uptime_share(self) -> float | None:
        """Share of the range it was STARTED (counted from when we first saw it)."""
        span = (self.end - self.observed_from).total_seconds()
        return float(self.started_seconds) / span if span > 0 else None

    @property
    def observed_from(self) -> datetime:
        """Start of the range, or the first poll that saw the endpoint if that came later."""
        return max(self.start, self.endpoint.first_seen)

    @property
    def partly_observed(self) -> bool:
        return self.endpoint.first_seen > self.start


def start_of_today(now: datetime | None = None) -> datetime:
    """Midnight of today in the dashboard's time zone (TIME_ZONE)."""
    local = timezone.localtime(now or timezone.now())
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


def started_spans(
    changes: Iterable[tuple[datetime, str]], start: datetime, end: datetime
) -> list[tuple[datetime, datetime]]:
    """The spans within [start, end) spent STARTED, from (time, state) pairs in time order.

    The pair at or before `start` (if any) gives the state at `start`; each later pair ends the span
    its predecessor began.
    """
    spans: list[tuple[datetime, datetime]] = []
    running_since: datetime | None = None
    for at, state in changes:
        at = min(max(at, start), end)
        if running_since is not None and state != EndpointState.STARTED:
            spans.append((running_since, at))
            running_since = None
        elif running_since is None and state == EndpointState.STARTED:
            running_since = at
    if running_since is not None:
        spans.append((running_since, end))
    return [(first, last) for first, last in spans if last > first]


def seconds_in(spans: Sequence[tuple[datetime, datetime]]) -> Decimal:
    total = sum((last - first for first, last in spans), timedelta(0))
    return Decimal(total // timedelta(microseconds=1)) / Decimal(1_000_000)


Timeline = list[tuple[datetime, str]]


def timelines(endpoints: Sequence[Endpoint], start: datetime, end: datetime) -> dict[int, Timeline]:
    """Per endpoint, its state at `start` (when known) and every change within [start, end): two queries."""
    ids = [endpoint.pk for endpoint in endpoints]
    before = EndpointStateChange.objects.filter(endpoint=OuterRef("pk"), at__lte=start).order_by("-at", "-id")
    opening = Endpoint.objects.filter(pk__in=ids).annotate(
        at=Subquery(before.values("at")[:1]), opening_state=Subquery(before.values("state")[:1])
    )
    found: dict[int, Timeline] = {pk: [] for pk in ids}
    for row in opening.values("pk", "at", "opening_state"):
        if row["at"] is not None:
            found[row["pk"]].append((row["at"], row["opening_state"]))
    within = EndpointStateChange.objects.filter(endpoint_id__in=ids, at__gt=start, at__lt=end)
    for endpoint_id, at, state in within.order_by("at", "id").values_list("endpoint_id", "at", "state"):
        found[endpoint_id].append((at, state))
    return found


def endpoint_usage(
    endpoints: Sequence[Endpoint], start: datetime, end: datetime
) -> list[EndpointUsage]:
    """Each endpoint's time STARTED, cost and recorded traffic over [start, end), in the order given."""
    lines = timelines(endpoints, start, end)
    hardware = Hardware.objects.in_bulk({e.hardware for e in endpoints}, field_name="hardware_id")
    traffic = usage_breakdown(start, end, by="model") if endpoints else {}
    return [
        EndpointUsage(
            endpoint=endpoint,
            hardware=hardware.get(endpoint.hardware),
            start=start,
            end=end,
            started_seconds=seconds_in(started_spans(lines[endpoint.pk], start, end)),
            traffic=traffic.get(endpoint.name) or UsageCounts(),
        )
        for endpoint in endpoints
    ]


def usage_today(endpoints: Sequence[Endpoint], now: datetime | None = None) -> list[EndpointUsage]:
    now = now or timezone.now()
    return endpoint_usage(endpoints, start_of_today(now), now)


def requests_since(names: Iterable[str], since: datetime, now: datetime | None = None) -> dict[str, int]:
    """Requests recorded to each of these models (endpoint names) over [since, now), from the rollups."""
    wanted = set(names)
    if not wanted:
        return {}
    found = summed(since, now or timezone.now(), columns=("requests",), by="model")
    return {name: int(found.get(name, {}).get("requests", 0)) for name in wanted}


def duration_text(seconds: Decimal | float) -> str:
    """4530 s -> "1 h 15 min"; under a minute -> "0 min"."""
    minutes = int(seconds) // 60
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"
