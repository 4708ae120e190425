"""The model catalog as polled from GET /models, and the changes seen between polls."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import models
from django.utils import timezone

PRICE_FIELDS: tuple[str, ...] = ("input", "output", "hourly", "base", "finetune", "cached_input")
# A model recently used by our traffic and then removed needs a human: it is flagged for this long.
RECENT_USE = timedelta(days=7)


class ModelInfoQuerySet(models.QuerySet):
    def removed_in_use_since(self, since: datetime) -> ModelInfoQuerySet:
        """Removed models our traffic still used at or after `since`."""
        return self.filter(state=ModelInfo.State.REMOVED, last_used_at__gte=since)


class ModelInfo(models.Model):
    """One Together model, keyed by its exact id; removed models are kept and marked."""

    class State(models.TextChoices):
        NEW = "new"
        AVAILABLE = "available"
        REMOVED = "removed"

    model_id = models.CharField(max_length=255, unique=True)
    display_name = models.CharField(max_length=255, blank=True)
    type = models.CharField(max_length=32, blank=True)
    organization = models.CharField(max_length=100, blank=True)
    context_length = models.PositiveIntegerField(null=True, blank=True)
    # USD per 1M tokens for input/output (reference §2.1); hourly/base/finetune as Together reports them.
    pricing_input = models.DecimalField(max_digits=14, decimal_places=6, null=True, blank=True)
    pricing_output = models.DecimalField(max_digits=14, decimal_places=6, null=True, blank=True)
    pricing_hourly = models.DecimalField(max_digits=14, decimal_places=6, null=True, blank=True)
    pricing_base = models.DecimalField(max_digits=14, decimal_places=6, null=True, blank=True)
    pricing_finetune = models.DecimalField(max_digits=14, decimal_places=6, null=True, blank=True)
    # USD per 1M prompt tokens served from the prompt cache; None: no cached price (all at input price).
    pricing_cached_input = models.DecimalField(max_digits=14, decimal_places=6, null=True, blank=True)
    upstream_created = models.DateTimeField(null=True, blank=True)
    state = models.CharField(max_length=10, choices=State.choices, default=State.AVAILABLE)
    first_seen = models.DateTimeField(default=timezone.now)
    last_seen = models.DateTimeField(default=timezone.now)
    removed_at = models.DateTimeField(null=True, blank=True)
    # Latest request our traffic made for this model, looked up when it is removed.
    last_used_at = models.DateTimeField(null=True, blank=True)
    # A suggestion shown to people, never applied to requests.
    successor = models.CharField(max_length=255, blank=True)
    raw = models.JSONField(default=dict, blank=True)

    objects = ModelInfoQuerySet.as_manager()

    class Meta:
        ordering = ["model_id"]
        indexes = [models.Index(fields=["state", "organization"], name="modelinfo_state_org_idx")]

    def __str__(self) -> str:
        return self.model_id

    @property
    def is_removed(self) -> bool:
        return self.state == self.State.REMOVED

    @property
    def is_unpriced(self) -> bool:
        """Together gave no input or no output price: our requests to it have no known cost."""
        return self.pricing_input is None or self.pricing_output is None

    def used_recently(self, now: datetime | None = None) -> bool:
        """True when our traffic used this model within RECENT_USE."""
        now = now or timezone.now()
        return self.last_used_at is not None and now - self.last_used_at <= RECENT_USE

    @property
    def needs_attention(self) -> bool:
        """Removed while our traffic still used it: requests to it now fail with model_not_found."""
        return self.is_removed and self.used_recently()

    def tracked_values(self) -> dict[str, Any]:
        """The values whose change is an event: context length and prices (as strings, for JSON)."""
        values: dict[str, Any] = {"context_length": self.context_length}
        for name in PRICE_FIELDS:
            price: Decimal | None = getattr(self, f"pricing_{name}")
            values[f"pricing_{name}"] = None if price is None else format(price.normalize(), "f")
        return values


class CatalogVersion(models.Model):
    """One row whose generation grows whenever the polled catalog changes.

    Every process prices requests from an in-process copy of the catalog's prices (catalog.pricing);
    it compares this generation, one small read per batch of requests, to know when its copy is stale.
    A poll in the worker process so reaches the web processes' next batch, not their next reload.
    """

    # A fresh random value per change, not a counter: equal only when nothing changed in between, even
    # across a rolled-back transaction that had bumped it.
    generation = models.CharField(max_length=32, default="")
    changed_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"catalog generation {self.generation}"

    @classmethod
    def bump(cls) -> None:
        """Announce a change of the catalog to every process."""
        values = {"generation": uuid.uuid4().hex, "changed_at": timezone.now()}
        if not cls.objects.filter(pk=1).update(**values):
            cls.objects.update_or_create(pk=1, defaults=values)

    @classmethod
    def current(cls) -> str:
        return cls.objects.filter(pk=1).values_list("generation", flat=True).first() or ""


class ModelChange(models.Model):
    """A catalog event: a model appeared, disappeared, came back, or changed context length or price."""

    class Kind(models.TextChoices):
        ADDED = "added"
        REMOVED = "removed"
        RESTORED = "restored"
        CHANGED = "changed"

    model = models.ForeignKey(ModelInfo, models.CASCADE, related_name="changes")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    at = models.DateTimeField(default=timezone.now)
    before = models.JSONField(default=dict, blank=True)
    after = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["-at"], name="modelchange_time_idx")]

    def __str__(self) -> str:
        return f"{self.kind} {self.model_id} {self.at:%Y-%m-%d %H:%M}"
