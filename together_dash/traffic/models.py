"""Request logs captured by the proxy or the ingest API, and the error groups they roll into."""
from __future__ import annotations

import hashlib
from datetime import datetime

from django.db import models
from django.db.models.functions import Coalesce
from django.utils import timezone

from together_dash.keys.models import AppKey, TogetherKey
from together_dash.together.errors import TAXONOMY, KindInfo

CATEGORY_CHOICES = [
    ("auth", "Auth"),
    ("billing", "Billing"),
    ("rate_limit", "Rate limit"),
    ("validation", "Validation"),
    ("not_found", "Not found"),
    ("server", "Server"),
    ("network", "Network"),
]


APP_KEY_REJECTED = "app_key_rejected"  # the kind of a request the proxy refused for its app key


class RequestLogQuerySet(models.QuerySet):
    def app_key_rejections_since(self, since: datetime, at_least: float) -> list[dict]:
        """App keys (None: not attributable) the proxy refused at least `at_least` times since `since`.

        Each row: app_key_id, app_key__name, app_key__prefix, n, and the newest refusal's message. The
        error groups answer first whether there can be that many at all (the usual answer is no); only
        then are the window's rows counted, through the (category, created_at) index.
        """
        groups = ErrorGroup.objects.seen_since(APP_KEY_REJECTED, since)
        if (groups.aggregate(n=models.Sum("count"))["n"] or 0) < at_least:
            return []
        refused = self.filter(category="auth", kind=APP_KEY_REJECTED, created_at__gte=since)
        rows = [
            row
            for row in refused.values("app_key_id", "app_key__name", "app_key__prefix").annotate(
                n=models.Count("id")
            )
            if row["n"] >= at_least
        ]
        for row in rows:
            newest = refused.filter(app_key_id=row["app_key_id"]).order_by("-created_at", "-id")
            row["message"] = newest.values_list("error_message", flat=True).first() or ""
        return rows


class RequestLog(models.Model):
    """One request to Together. Unknown numbers are NULL, never 0."""

    class Source(models.TextChoices):
        PROXY = "proxy"
        INGEST = "ingest"

    created_at = models.DateTimeField(default=timezone.now)
    source = models.CharField(max_length=8, choices=Source.choices, default=Source.PROXY)
    # The plain FK indexes are replaced by the (fk, -created_at, -id) keyset indexes below: fewer indexes
    # to maintain on the ingest path, and each one also serves filtered, time-ordered listing.
    # No database constraints either: PostgreSQL checks a deferred foreign key with a trigger per row
    # at commit, which cost more than half the ingest rate. Django still applies SET_NULL on delete.
    app_key = models.ForeignKey(
        AppKey, models.SET_NULL, null=True, blank=True, related_name="+", db_index=False, db_constraint=False
    )
    upstream_key = models.ForeignKey(
        TogetherKey, models.SET_NULL, null=True, blank=True, related_name="+", db_index=False,
        db_constraint=False,
    )
    # Ingest records may carry the client's own id; (app_key, client_id) makes re-sends idempotent.
    # NULL, not "", for "no id": the partial unique constraint below only covers rows that have one.
    client_id = models.CharField(max_length=100, null=True, blank=True)  # noqa: DJ001
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
    error_group = models.ForeignKey(
        "ErrorGroup", models.SET_NULL, null=True, blank=True, related_name="+", db_index=False,
        db_constraint=False,
    )

    objects = RequestLogQuerySet.as_manager()

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
            models.Index(fields=["upstream_key", "-created_at", "-id"], name="reqlog_key_keyset_idx"),
            models.Index(fields=["app_key", "-created_at", "-id"], name="reqlog_appkey_keyset_idx"),
            models.Index(fields=["model_requested", "-created_at", "-id"], name="reqlog_model_keyset_idx"),
            models.Index(
                fields=["category", "-created_at", "-id"],
                name="reqlog_error_keyset_idx",
                condition=~models.Q(category=""),
            ),
            models.Index(
                fields=["error_group", "-created_at", "-id"],
                name="reqlog_group_keyset_idx",
                condition=models.Q(error_group__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.method} {self.endpoint} {self.status_code}"

    @property
    def is_error(self) -> bool:
        return bool(self.category)

    @property
    def is_unpriced(self) -> bool:
        """Token counts known, cost not: the model had no price in the catalog (never shown as $0)."""
        model = self.model_served or self.model_requested
        return is_unpriced(self.cost_usd, self.prompt_tokens, self.completion_tokens, model)


class RequestBodySample(models.Model):
    """The opt-in copy of one request's bodies (PROXY_BODY_SAMPLE_RATE): redacted and size-capped.

    A table of its own, not columns of RequestLog: only sampled requests have one, and the log rows stay
    narrow and COPY-able. created_at repeats the log's time so retention prunes both alike.
    """

    request_log = models.OneToOneField(
        RequestLog, models.CASCADE, related_name="body_sample", db_constraint=False
    )
    created_at = models.DateTimeField(db_index=True)
    request_body = models.TextField(blank=True)
    response_body = models.TextField(blank=True)

    def __str__(self) -> str:
        return f"bodies of request log {self.request_log_id}"


class ErrorGroupQuerySet(models.QuerySet):
    def seen_since(self, kind: str, since: datetime) -> ErrorGroupQuerySet:
        """Groups of this error kind with an occurrence at or after `since`."""
        return self.filter(kind=kind, last_seen__gte=since)

    def counts_by_key(self) -> models.QuerySet:
        """Occurrences per upstream key (id and name) over these groups."""
        return self.values("upstream_key_id", "upstream_key__name").annotate(n=models.Sum("count"))

    def all_time_counts(self) -> models.QuerySet:
        """Occurrences per (category, kind, model, upstream key id) since the first: they only ever grow.

        Groups are never deleted (retention keeps them) and their counts only go up, so Prometheus
        counters can be built on these sums.
        """
        rows = self.values("category", "kind", "model", "upstream_key_id")
        return rows.annotate(n=models.Sum("count")).order_by()


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

    objects = ErrorGroupQuerySet.as_manager()

    class Meta:
        indexes = [
            models.Index(fields=["state", "-last_seen"], name="errgroup_state_seen_idx"),
            models.Index(fields=["category", "-last_seen"], name="errgroup_cat_seen_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.category}/{self.kind} {self.model or '-'} {self.endpoint}"

    @property
    def info(self) -> KindInfo | None:
        """Cause, fix and retry advice for this group's kind, from the classifier's taxonomy."""
        return TAXONOMY.get(self.kind)

    def resolve(self) -> bool:
        """Mark the group resolved; False when it was not open (someone else got there first)."""
        now = timezone.now()
        changed = ErrorGroup.objects.filter(id=self.id, state=self.State.OPEN).update(
            state=self.State.RESOLVED, resolved_at=now
        )
        if changed:
            self.state, self.resolved_at = self.State.RESOLVED, now
        return bool(changed)

    @staticmethod
    def make_fingerprint(category: str, kind: str, model: str, endpoint: str, key_id: int | None) -> str:
        raw = "|".join([category, kind, model, endpoint, str(key_id or "")])
        return hashlib.sha1(raw.encode(), usedforsecurity=False).hexdigest()


def is_unpriced(cost: object, prompt_tokens: int | None, completion_tokens: int | None, model: str) -> bool:
    """Both token counts known, the cost not: the model (served, else requested) has no catalog price."""
    return cost is None and bool(model) and prompt_tokens is not None and completion_tokens is not None


# Latency histogram: each request with a known latency lands in exactly one bucket (not cumulative).
# latency_le_<N> counts latencies in (previous bound, N] milliseconds; latency_gt_10000 the rest.
LATENCY_BOUNDS_MS: tuple[int, ...] = (100, 250, 500, 1000, 2500, 5000, 10000)
LATENCY_COLUMNS: tuple[str, ...] = (*(f"latency_le_{b}" for b in LATENCY_BOUNDS_MS), "latency_gt_10000")
ERROR_COLUMNS: dict[str, str] = {category: f"errors_{category}" for category, _ in CATEGORY_CHOICES}
# Every counter column of a rollup row, in the order recording.py aggregates them.
COUNTER_COLUMNS: tuple[str, ...] = (
    "requests",
    *ERROR_COLUMNS.values(),
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cost_usd",
    "unpriced_requests",
    "latency_sum_ms",
    "latency_count",
    *LATENCY_COLUMNS,
)


class UsageRollup(models.Model):
    """Per (bucket, upstream key, model) counters, incremented by recording.record_entries()."""

    bucket = models.DateTimeField()
    upstream_key = models.ForeignKey(
        TogetherKey, models.PROTECT, null=True, blank=True, related_name="+", db_index=False
    )
    model = models.CharField(max_length=200, blank=True)
    requests = models.BigIntegerField(default=0)
    errors_auth = models.BigIntegerField(default=0)
    errors_billing = models.BigIntegerField(default=0)
    errors_rate_limit = models.BigIntegerField(default=0)
    errors_validation = models.BigIntegerField(default=0)
    errors_not_found = models.BigIntegerField(default=0)
    errors_server = models.BigIntegerField(default=0)
    errors_network = models.BigIntegerField(default=0)
    # Token sums count only the requests that reported them; unknown stays out, never counted as 0.
    prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    total_tokens = models.BigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=20, decimal_places=8, default=0)
    # Requests with token counts but no cost: their model had no price (is_unpriced). cost_usd leaves
    # them out; the backfill adds their cost and takes them off this count once a price arrives.
    unpriced_requests = models.BigIntegerField(default=0)
    latency_sum_ms = models.FloatField(default=0)
    latency_count = models.BigIntegerField(default=0)
    latency_le_100 = models.BigIntegerField(default=0)
    latency_le_250 = models.BigIntegerField(default=0)
    latency_le_500 = models.BigIntegerField(default=0)
    latency_le_1000 = models.BigIntegerField(default=0)
    latency_le_2500 = models.BigIntegerField(default=0)
    latency_le_5000 = models.BigIntegerField(default=0)
    latency_le_10000 = models.BigIntegerField(default=0)
    latency_gt_10000 = models.BigIntegerField(default=0)

    class Meta:
        abstract = True
        # NULL keys must collide too, so the unique index is on COALESCE(upstream_key_id, 0);
        # recording.py names the same expression in its ON CONFLICT target.
        constraints = [
            models.UniqueConstraint(
                models.F("bucket"),
                Coalesce("upstream_key", models.Value(0), output_field=models.BigIntegerField()),
                models.F("model"),
                name="%(class)s_bucket_key_model_uniq",
            ),
        ]
        indexes = [
            models.Index(fields=["upstream_key", "bucket"], name="%(class)s_key_bucket_idx"),
            models.Index(fields=["model", "bucket"], name="%(class)s_model_bucket_idx"),
            models.Index(
                fields=["bucket"], name="%(class)s_unpriced_idx", condition=models.Q(unpriced_requests__gt=0)
            ),
        ]

    def __str__(self) -> str:
        return f"{self.bucket:%Y-%m-%d %H:%M} key={self.upstream_key_id or '-'} {self.model or '-'}"

    @property
    def errors(self) -> int:
        return sum(getattr(self, column) for column in ERROR_COLUMNS.values())


class UsageMinute(UsageRollup):
    """Usage per minute; kept ROLLUP_MINUTE_RETENTION_DAYS, read for the ragged minutes of a range."""

    class Meta(UsageRollup.Meta):
        pass


class UsageHour(UsageRollup):
    """Usage per hour; kept for good, read for the whole hours of a range."""

    class Meta(UsageRollup.Meta):
        pass


class UsageDay(UsageRollup):
    """Usage per UTC day; kept for good, read for the whole days of a long range."""

    class Meta(UsageRollup.Meta):
        pass


class AppKeySpendHour(models.Model):
    """Per (hour, app key) requests and cost: what app-key budgets read, incremented with the other rollups.

    The usage rollups are keyed by upstream key and model, and several app keys share one upstream key;
    summing an app key's month from the request log would read every one of its rows (millions at scale).
    A month is at most 744 of these rows per app key, read through the unique (app key, bucket) index.
    Kept for good, like the hour rollups.
    """

    bucket = models.DateTimeField()
    app_key = models.ForeignKey(
        AppKey, models.CASCADE, related_name="+", db_index=False, db_constraint=False
    )
    requests = models.BigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=20, decimal_places=8, default=0)
    # As in UsageRollup: requests with token counts and no price, left out of cost_usd until backfilled.
    unpriced_requests = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["app_key", "bucket"], name="appkeyspend_key_bucket_uniq"),
        ]

    def __str__(self) -> str:
        return f"{self.bucket:%Y-%m-%d %H:00} app key {self.app_key_id}"
