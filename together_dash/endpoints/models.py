"""Dedicated endpoints as polled (GET /v1/endpoints), the state changes seen, and the hardware they run on
(GET /v1/hardware) with its price.

Together reports an endpoint's state, not when it changed: a change is dated by the poll that first saw
it (`at`), with the last poll that saw the state before (`previous_seen_at`), so each time derived from
the timeline (uptime, time STARTING) is exact to within one poll interval. An endpoint that vanishes
from the listing of the key that listed it gets a change to DELETED, our own state, which ends its time.
"""
from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from django.db import models
from django.utils import timezone

from together_dash.billing.models import amount_field
from together_dash.keys.models import TogetherKey
from together_dash.together.types import EndpointState

DELETED = "DELETED"  # ours: no longer listed by the key that listed it
BOOTING = (EndpointState.PENDING, EndpointState.STARTING)


class Hardware(models.Model):
    """A hardware configuration and its price: Together's cents per minute, and the same in USD, exactly."""

    hardware_id = models.CharField(max_length=100, unique=True)
    cents_per_minute = amount_field()
    price_per_minute_usd = amount_field()
    gpu_type = models.CharField(max_length=100, blank=True)
    gpu_link = models.CharField(max_length=50, blank=True)
    gpu_memory = models.PositiveIntegerField(null=True, blank=True)  # GB per GPU
    gpu_count = models.PositiveIntegerField(null=True, blank=True)
    updated_at = models.DateTimeField(null=True, blank=True)  # Together's
    first_seen = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["hardware_id"]
        verbose_name_plural = "hardware"

    def __str__(self) -> str:
        return self.hardware_id

    @property
    def description(self) -> str:
        if not self.gpu_count or not self.gpu_type:
            return ""
        memory = f", {self.gpu_memory} GB" if self.gpu_memory else ""
        return f"{self.gpu_count}x {self.gpu_type}{memory}"


class EndpointQuerySet(models.QuerySet):
    def listed(self) -> EndpointQuerySet:
        """Endpoints the latest poll of their key still listed."""
        return self.filter(gone_at__isnull=True)

    def in_state_since(self, states: tuple[str, ...], before: datetime) -> EndpointQuerySet:
        """Listed endpoints in one of the states since `before` or earlier."""
        return self.listed().filter(state__in=states, state_since__lte=before)


class Endpoint(models.Model):
    """One dedicated endpoint, as last polled; `name` is what requests to it send as model."""

    endpoint_id = models.CharField(max_length=100, unique=True)
    name = models.CharField(max_length=255, db_index=True)
    display_name = models.CharField(max_length=255, blank=True)
    model = models.CharField(max_length=255, blank=True)
    hardware = models.CharField(max_length=100, blank=True)
    state = models.CharField(max_length=10)
    # When a poll first saw the current state, and when the current PENDING/STARTING run began.
    state_since = models.DateTimeField(default=timezone.now)
    booting_since = models.DateTimeField(null=True, blank=True)
    owner = models.CharField(max_length=200, blank=True)
    # The key whose listing last had it; keys of one project all list its endpoints.
    upstream_key = models.ForeignKey(TogetherKey, models.SET_NULL, null=True, blank=True, related_name="+")
    min_replicas = models.PositiveIntegerField(null=True, blank=True)
    max_replicas = models.PositiveIntegerField(null=True, blank=True)
    inactive_timeout = models.PositiveIntegerField(null=True, blank=True)  # minutes; None: never stops
    created_at = models.DateTimeField(null=True, blank=True)  # Together's
    first_seen = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(default=timezone.now)
    gone_at = models.DateTimeField(null=True, blank=True)
    raw = models.JSONField(default=dict, blank=True)

    objects = EndpointQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        indexes = [models.Index(fields=["state", "state_since"], name="endpoint_state_since_idx")]

    def __str__(self) -> str:
        return self.name or self.endpoint_id

    @property
    def replicas(self) -> int:
        """The replicas billed while running with no load: autoscaling's minimum (at least one)."""
        return max(1, self.min_replicas or 1)

    @property
    def is_started(self) -> bool:
        return self.state == EndpointState.STARTED


class EndpointStateChange(models.Model):
    """A state a poll saw an endpoint enter; it happened after `previous_seen_at` and by `at`."""

    endpoint = models.ForeignKey(Endpoint, models.CASCADE, related_name="changes")
    state = models.CharField(max_length=10)
    previous_state = models.CharField(max_length=10, blank=True)
    at = models.DateTimeField()
    previous_seen_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["endpoint", "at", "id"]
        indexes = [models.Index(fields=["endpoint", "at"], name="endpoint_change_at_idx")]

    def __str__(self) -> str:
        return f"{self.endpoint_id} {self.previous_state or '-'} -> {self.state} at {self.at:%Y-%m-%d %H:%M}"


def usd_per_minute(cents: Decimal) -> Decimal:
    """Together's cents per minute in dollars, exactly."""
    return cents / 100
