"""Request logs captured by the proxy or the ingest API, and the error groups they roll into."""
from __future__ import annotations

import hashlib

from django.db import models
from django.utils import timezone

from together_dash.keys.models import AppKey, TogetherKey

CATEGORY_CHOICES = [
    ("auth", "Auth"),
    ("billing", "Billing"),
    ("rate_limit", "Rate limit"),
    ("validation", "Validation"),
    ("not_found", "Not found"),
    ("server", "Server"),
    ("network", "Network"),
]


class RequestLog(models.Model):
    """One request to Together. Unknown numbers are NULL, never 0."""

    class Source(models.TextChoices):
        PROXY = "proxy"
        INGEST = "ingest"

    created_at = models.DateTimeField(default=timezone.now)
    source = models.CharField(max_length=8, choices=Source.choices, default=Source.PROXY)
    app_key = models.ForeignKey(AppKey, models.SET_NULL, null=True, blank=True, related_name="+")
    upstream_key = models.ForeignKey(TogetherKey, models.SET_NULL, null=True, blank=True, related_name="+")
    # Ingest records may carry the client's own id; (app_key, client_id) makes re-sends idempotent.
    client_id = models.CharField(max_length=100, null=True, blank=True)
    key_fingerprint = models.CharField(max_length=16, blank=True)
    method = models.CharField(max_length=8, default="POST")
    endpoint = models.CharField(max_length=200)
    model_requested = models.CharField(max_length=200, blank=True)
    model_served = models.CharField(max_length=200, blank=True)
    stream = models.BooleanField(default=False)
    status_code = models.SmallIntegerField(null=True, blank=True)
    latency_ms = models.FloatField(null=True, blank=True)
    ttft_ms = models.FloatField(null=True, blank=True)
    prompt_tokens = models.IntegerField(null=True, blank=True)
    completion_tokens = models.IntegerField(null=True, blank=True)
    total_tokens = models.IntegerField(null=True, blank=True)
    cached_tokens = models.IntegerField(null=True, blank=True)
    cost_usd = models.DecimalField(max_digits=14, decimal_places=8, null=True, blank=True)
    request_id = models.CharField(max_length=100, blank=True)
    ratelimit_limit = models.IntegerField(null=True, blank=True)
    ratelimit_remaining = models.IntegerField(null=True, blank=True)
    ratelimit_reset = models.FloatField(null=True, blank=True)
    tokenlimit_limit = models.IntegerField(null=True, blank=True)
    tokenlimit_remaining = models.IntegerField(null=True, blank=True)
    category = models.CharField(max_length=16, choices=CATEGORY_CHOICES, blank=True)
    kind = models.CharField(max_length=40, blank=True)
    error_message = models.CharField(max_length=1000, blank=True)
    error_group = models.ForeignKey("ErrorGroup", models.SET_NULL, null=True, blank=True, related_name="+")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["app_key", "client_id"],
                name="reqlog_client_id_unique",
                condition=models.Q(client_id__isnull=False),
            ),
        ]
        indexes = [
            # Keyset pagination and time-bounded listing: newest first, id breaks ties.
            models.Index(fields=["-created_at", "-id"], name="reqlog_time_idx"),
            models.Index(fields=["upstream_key", "-created_at"], name="reqlog_key_time_idx"),
            models.Index(fields=["model_requested", "-created_at"], name="reqlog_model_time_idx"),
            models.Index(
                fields=["category", "-created_at"],
                name="reqlog_error_time_idx",
                condition=~models.Q(category=""),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.method} {self.endpoint} {self.status_code}"

    @property
    def is_error(self) -> bool:
        return bool(self.category)


class ErrorGroup(models.Model):
    """Errors that share a fingerprint: (category, kind, model, endpoint, upstream key)."""

    class State(models.TextChoices):
        OPEN = "open"
        RESOLVED = "resolved"

    fingerprint = models.CharField(max_length=40, unique=True)
    category = models.CharField(max_length=16, choices=CATEGORY_CHOICES)
    kind = models.CharField(max_length=40)
    model = models.CharField(max_length=200, blank=True)
    endpoint = models.CharField(max_length=200, blank=True)
    upstream_key = models.ForeignKey(TogetherKey, models.SET_NULL, null=True, blank=True, related_name="+")
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()
    count = models.BigIntegerField(default=0)
    last_message = models.CharField(max_length=1000, blank=True)
    last_status = models.SmallIntegerField(null=True, blank=True)
    state = models.CharField(max_length=10, choices=State.choices, default=State.OPEN)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["state", "-last_seen"], name="errgroup_state_seen_idx"),
            models.Index(fields=["category", "-last_seen"], name="errgroup_cat_seen_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.category}/{self.kind} {self.model or '-'} {self.endpoint}"

    @staticmethod
    def make_fingerprint(category: str, kind: str, model: str, endpoint: str, key_id: int | None) -> str:
        raw = "|".join([category, kind, model, endpoint, str(key_id or "")])
        return hashlib.sha1(raw.encode(), usedforsecurity=False).hexdigest()
