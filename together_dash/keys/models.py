"""Upstream Together keys. Secrets are encrypted at rest and never rendered."""
from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone

from together_dash.keys import crypto
from together_dash.together.client import key_fingerprint


class TogetherKeyQuerySet(models.QuerySet):
    def active_but_invalid(self) -> TogetherKeyQuerySet:
        """Keys in use that the latest health check found invalid."""
        return self.filter(status=TogetherKey.Status.ACTIVE, health=TogetherKey.Health.INVALID)


class TogetherKey(models.Model):
    """An upstream Together API key; its id stays stable across rotations."""

    class Status(models.TextChoices):
        ACTIVE = "active"
        REVOKED = "revoked"

    class Health(models.TextChoices):
        UNKNOWN = "unknown"
        HEALTHY = "healthy"
        INVALID = "invalid"

    name = models.CharField(max_length=100, unique=True)
    secret_encrypted = models.TextField(editable=False)
    last_four = models.CharField(max_length=4, editable=False)
    fingerprint = models.CharField(max_length=16, db_index=True, editable=False)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+"
    )
    rotated_at = models.DateTimeField(null=True, blank=True)
    rotated_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+"
    )
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+"
    )
    health = models.CharField(max_length=10, choices=Health.choices, default=Health.UNKNOWN)
    health_checked_at = models.DateTimeField(null=True, blank=True)
    health_detail = models.CharField(max_length=300, blank=True)
    organization_name = models.CharField(max_length=200, blank=True)
    project_name = models.CharField(max_length=200, blank=True)
    # After a rotation with a grace window the old ciphertext is kept until previous_valid_until, then
    # wiped (expire_key_grace); the new secret is primary at once either way.
    previous_secret_encrypted = models.TextField(blank=True, editable=False)
    previous_last_four = models.CharField(max_length=4, blank=True, editable=False)
    previous_valid_until = models.DateTimeField(null=True, blank=True, editable=False)

    objects = TogetherKeyQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} (…{self.last_four})"

    @property
    def is_active(self) -> bool:
        return self.status == self.Status.ACTIVE

    @property
    def secret(self) -> str:
        """The plaintext secret; only for building upstream requests, never for display."""
        return crypto.decrypt(self.secret_encrypted)

    def set_secret(self, secret: str) -> None:
        """Encrypt and store a new secret, keeping only its last four characters in clear."""
        self.secret_encrypted = crypto.encrypt(secret)
        self.last_four = secret[-4:]
        self.fingerprint = key_fingerprint(secret)

    @classmethod
    def create(cls, name: str, secret: str, user: object | None = None) -> TogetherKey:
        key = cls(name=name, created_by=user)
        key.set_secret(secret)
        key.save()
        return key

    def mark_verified(self) -> None:
        """Record that Together just accepted the secret (add and rotate verify before storing)."""
        self.health, self.health_checked_at, self.health_detail = self.Health.HEALTHY, timezone.now(), ""
        self.save(update_fields=["health", "health_checked_at", "health_detail"])

    @property
    def in_grace(self) -> bool:
        """True while the secret replaced by the last rotation is still kept."""
        return (
            bool(self.previous_secret_encrypted)
            and self.previous_valid_until is not None
            and self.previous_valid_until > timezone.now()
        )

    @property
    def previous_secret(self) -> str | None:
        """The replaced secret while its grace window lasts (for a rollback); None afterwards."""
        return crypto.decrypt(self.previous_secret_encrypted) if self.in_grace else None


def _hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class IssuedKeyQuerySet(models.QuerySet):
    def usable(self) -> IssuedKeyQuerySet:
        now = timezone.now()
        unexpired = models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=now)
        return self.filter(status="active").filter(unexpired)


class IssuedKey(models.Model):
    """A key this dashboard hands out: stored as a public prefix plus a sha256 of the whole key, shown once.

    Format: "<kind>_<prefix>_<secret>", e.g. "tdk_3k9x2mq7_..." for an app key.
    """

    KIND = ""

    class Status(models.TextChoices):
        ACTIVE = "active"
        REVOKED = "revoked"

    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=12, unique=True, editable=False)
    secret_hash = models.CharField(max_length=64, editable=False)
    # A rotated key keeps its previous hash usable until previous_valid_until (the grace window).
    previous_hash = models.CharField(max_length=64, blank=True, editable=False)
    previous_valid_until = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+"
    )
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    objects = IssuedKeyQuerySet.as_manager()

    class Meta:
        abstract = True
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.KIND}_{self.prefix}_…)"

    @classmethod
    def split(cls, presented: str) -> tuple[str, str] | None:
        """Return (prefix, whole key) when the presented string has this kind's shape."""
        parts = presented.split("_", 2)
        if len(parts) != 3 or parts[0] != cls.KIND or not parts[1] or not parts[2]:
            return None
        return parts[1], presented

    def _new_secret(self) -> str:
        self.prefix = self.prefix or secrets.token_hex(4)
        return f"{self.KIND}_{self.prefix}_{secrets.token_urlsafe(32)}"

    def issue(self) -> str:
        """Generate the secret, store its hash and return it; the caller shows it once."""
        whole = self._new_secret()
        self.secret_hash = _hash_secret(whole)
        return whole

    def rotate(self, grace: timedelta | None = None) -> str:
        """Issue a new secret; the old one keeps working for the grace window, if any."""
        if grace:
            self.previous_hash = self.secret_hash
            self.previous_valid_until = timezone.now() + grace
        else:
            self.previous_hash, self.previous_valid_until = "", None
        return self.issue()

    def matches(self, presented: str) -> bool:
        """Constant-time comparison against the current and, within its grace window, the previous hash."""
        digest = _hash_secret(presented)
        if hmac.compare_digest(digest, self.secret_hash):
            return True
        in_grace = self.previous_valid_until is not None and self.previous_valid_until > timezone.now()
        return in_grace and bool(self.previous_hash) and hmac.compare_digest(digest, self.previous_hash)

    @property
    def is_usable(self) -> bool:
        expired = self.expires_at is not None and self.expires_at <= timezone.now()
        return self.status == self.Status.ACTIVE and not expired


class AppKey(IssuedKey):
    """A key an application presents to the proxy and the ingest API; maps to an upstream Together key."""

    KIND = "tdk"

    upstream_key = models.ForeignKey(
        TogetherKey, models.PROTECT, null=True, blank=True, related_name="app_keys"
    )
    allowed_models = models.JSONField(default=list, blank=True)
    rate_limit_per_minute = models.PositiveIntegerField(null=True, blank=True)

    def allows_model(self, model: str) -> bool:
        return not self.allowed_models or model in self.allowed_models


class ApiToken(IssuedKey):
    """A read token for scripts using the JSON API (ops token)."""

    KIND = "tdo"


class AuditLog(models.Model):
    """One key administration attempt, successful or not; never holds a secret."""

    class Action(models.TextChoices):
        CREATE = "create"
        ROTATE = "rotate"
        REVOKE = "revoke"
        UPDATE = "update"
        ROLLBACK = "rollback"
        EXPIRE_GRACE = "expire_grace"
        REENCRYPT = "reencrypt"
        SIGN_IN = "sign_in"
        ROLE_CHANGE = "role_change"

    class Outcome(models.TextChoices):
        SUCCESS = "success"
        FAILURE = "failure"

    class KeyType(models.TextChoices):
        UPSTREAM = "upstream", "Upstream Together key"
        APP = "app", "App key"
        API_TOKEN = "api_token", "API token"
        ENCRYPTION = "encryption", "Encryption key"
        # Not a key, but an admin's money input, audited the same way (billing.CreditBalance).
        CREDIT = "credit", "Credit balance"
        # Not a key either: sign-ins and role changes, whose key_id and label are the user's.
        ACCOUNT = "account", "User account"

    class Via(models.TextChoices):
        WEB = "web"
        ADMIN = "admin"
        COMMAND = "command"
        SYSTEM = "system"

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    action = models.CharField(max_length=16, choices=Action.choices)
    outcome = models.CharField(max_length=8, choices=Outcome.choices)
    key_type = models.CharField(max_length=12, choices=KeyType.choices)
    # Plain ids and labels, not foreign keys: the trail outlives the rows it talks about.
    key_id = models.BigIntegerField(null=True, blank=True)
    key_label = models.CharField(max_length=120, blank=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+"
    )
    username = models.CharField(max_length=150, blank=True)
    via = models.CharField(max_length=8, choices=Via.choices)
    source_address = models.GenericIPAddressField(null=True, blank=True)
    detail = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["key_type", "key_id", "-created_at"], name="audit_key_time_idx")]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.username or '-'} {self.action} {self.key_label}"


class RateLimitSnapshotQuerySet(models.QuerySet):
    def best_headroom_since(self, since: datetime) -> models.QuerySet:
        """Per (key, model): the highest headroom any snapshot since `since` reported ("best")."""
        recent = self.filter(taken_at__gte=since, headroom_pct__isnull=False)
        return recent.values("key_id", "key__name", "model").annotate(best=models.Max("headroom_pct"))


class RateLimitSnapshot(models.Model):
    """Rate-limit headers seen for a key (and model, '' when key-level) at one moment."""

    class Source(models.TextChoices):
        PROBE = "probe"
        PROXY = "proxy"

    key = models.ForeignKey(TogetherKey, models.CASCADE, related_name="+")
    model = models.CharField(max_length=255, blank=True)
    taken_at = models.DateTimeField()
    source = models.CharField(max_length=8, choices=Source.choices)
    request_limit = models.FloatField(null=True, blank=True)
    request_remaining = models.FloatField(null=True, blank=True)
    reset_seconds = models.FloatField(null=True, blank=True)
    token_limit = models.FloatField(null=True, blank=True)
    token_remaining = models.FloatField(null=True, blank=True)
    request_limit_dynamic = models.FloatField(null=True, blank=True)
    request_remaining_dynamic = models.FloatField(null=True, blank=True)
    token_limit_dynamic = models.FloatField(null=True, blank=True)
    token_remaining_dynamic = models.FloatField(null=True, blank=True)
    # The tighter of request and token headroom, in percent; None when no limit was reported.
    headroom_pct = models.FloatField(null=True, blank=True)

    objects = RateLimitSnapshotQuerySet.as_manager()

    class Meta:
        ordering = ["-taken_at"]
        constraints = [
            # A proxied response is recorded once however often the poller rereads it.
            models.UniqueConstraint(
                fields=["key", "model", "source", "taken_at"], name="ratelimitsnap_unique"
            ),
        ]
        indexes = [
            models.Index(fields=["key", "model", "-taken_at"], name="ratelimitsnap_series_idx"),
            models.Index(fields=["-taken_at"], name="ratelimitsnap_time_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.key_id} {self.model or '(key)'} {self.taken_at:%Y-%m-%d %H:%M:%S}"
