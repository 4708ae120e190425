"""Key administration: add, rotate, revoke and re-encrypt keys, each attempt written to the audit log.

Views, admin actions and commands are thin shells over these functions. Every state change is claimed
with a conditional UPDATE, so two admins acting at once cannot both win, and every change bumps the
key-cache version (keys/cache.py) once committed, so the proxy switches at once.
"""
from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, models, transaction
from django.utils import timezone

from together_dash.keys import crypto
from together_dash.keys.audit import Actor, record
from together_dash.keys.cache import bump_key_cache_version_on_commit
from together_dash.keys.models import ApiToken, AppKey, AuditLog, TogetherKey
from together_dash.together.client import TogetherAPIError, TogetherClient, key_fingerprint
from together_dash.together.redact import redact

Action, Outcome, KeyType = AuditLog.Action, AuditLog.Outcome, AuditLog.KeyType
TOGETHER_KEYS_URL = "https://api.together.ai/settings/api-keys"
IssuedKeyModel = AppKey | ApiToken


class KeyActionError(Exception):
    """A key action that did not happen; the message is safe to show and never holds a secret."""


# ---- verification ------------------------------------------------------------------------------------

def check_secret_shape(secret: str) -> None:
    """Refuse what cannot be a Together key before it goes anywhere (headers, the network, the log)."""
    if not secret:
        raise KeyActionError("The secret is empty.")
    if not secret.isprintable() or any(char.isspace() for char in secret):
        raise KeyActionError("The secret must be one line without spaces.")
    if not 8 <= len(secret) <= 512:
        raise KeyActionError("The secret must be between 8 and 512 characters long.")


def verify_upstream_secret(secret: str) -> None:
    """Prove the secret works with Together's free GET /models; raise KeyActionError if not."""
    check_secret_shape(secret)
    client = TogetherClient(
        secret,
        base_url=settings.TOGETHER_BASE_URL,
        timeout=settings.TOGETHER_TIMEOUT,
        connect_timeout=settings.TOGETHER_CONNECT_TIMEOUT,
        max_retries=1,
    )
    try:
        with client:
            client.list_models()
    except TogetherAPIError as exc:
        # Raised from None: the chained error carries headers and bodies we do not want in a traceback.
        raise KeyActionError(_verification_failure(exc, secret)) from None


def _verification_failure(exc: TogetherAPIError, secret: str) -> str:
    status = f"HTTP {exc.status}" if exc.status else "no response"
    message = redact(exc.classified.message, (secret,))[:200]
    return f"Together did not accept the key ({status}, {exc.kind}): {message} Nothing was stored."


def _fail(action: str, actor: Actor, message: str, **target: object) -> KeyActionError:
    """Audit a failed attempt and return the error to raise."""
    record(action, Outcome.FAILURE, actor, detail=message, **target)
    return KeyActionError(message)


def _verified(action: str, actor: Actor, secret: str, **target: object) -> None:
    try:
        verify_upstream_secret(secret)
    except KeyActionError as exc:
        record(action, Outcome.FAILURE, actor, detail=str(exc), secrets=(secret,), **target)
        raise


# ---- upstream Together keys --------------------------------------------------------------------------

def add_upstream_key(name: str, secret: str, actor: Actor) -> TogetherKey:
    """Verify a Together key, then store it encrypted."""
    target = {"key_type": KeyType.UPSTREAM, "label": name}
    name = name.strip()
    if not name:
        raise _fail(Action.CREATE, actor, "A key needs a name.", **target)
    if TogetherKey.objects.filter(name=name).exists():
        raise _fail(Action.CREATE, actor, f"A key named {name!r} already exists.", **target)
    _verified(Action.CREATE, actor, secret, **target)
    try:
        with transaction.atomic():
            key = TogetherKey.create(name=name, secret=secret, user=actor.db_user)
            key.mark_verified()
            detail = f"ending …{key.last_four}, verified"
            record(Action.CREATE, Outcome.SUCCESS, actor, key=key, detail=detail)
    except IntegrityError:
        raise _fail(Action.CREATE, actor, f"A key named {name!r} already exists.", **target) from None
    return key


def rotate_upstream_key(
    key: TogetherKey, new_secret: str, actor: Actor, grace: timedelta | None = None
) -> TogetherKey:
    """Verify a new secret and make it the key's secret at once, keeping the old one for the grace window."""
    if not key.is_active:
        raise _fail(Action.ROTATE, actor, f"{key.name} is revoked; revoked keys cannot be rotated.", key=key)
    if key_fingerprint(new_secret) == key.fingerprint:
        raise _fail(Action.ROTATE, actor, "The new secret is the current secret.", key=key)
    _verified(Action.ROTATE, actor, new_secret, key=key)
    old_last_four, now = key.last_four, timezone.now()
    with transaction.atomic():
        # Claimed against the ciphertext we read: a concurrent rotate or revoke makes this a no-op.
        claimed = TogetherKey.objects.filter(
            pk=key.pk, status=TogetherKey.Status.ACTIVE, secret_encrypted=key.secret_encrypted
        ).update(**_rotation_fields(key, new_secret, actor, grace, now))
        if claimed:
            key.refresh_from_db()
            detail = _rotation_detail(key, old_last_four)
            record(Action.ROTATE, Outcome.SUCCESS, actor, key=key, detail=detail)
            bump_key_cache_version_on_commit()
    # Failures are recorded outside the transaction, so the audit row is not rolled back with it.
    if not claimed:
        raise _fail(Action.ROTATE, actor, f"{key.name} changed meanwhile; try again.", key=key)
    return key


def _rotation_fields(
    key: TogetherKey, new_secret: str, actor: Actor, grace: timedelta | None, now: datetime
) -> dict[str, object]:
    fields: dict[str, object] = {
        "secret_encrypted": crypto.encrypt(new_secret),
        "last_four": new_secret[-4:],
        "fingerprint": key_fingerprint(new_secret),
        "rotated_at": now,
        "rotated_by": actor.db_user,
        "health": TogetherKey.Health.HEALTHY,
        "health_checked_at": now,
        "health_detail": "",
    }
    if grace:
        fields.update(
            previous_secret_encrypted=key.secret_encrypted,
            previous_last_four=key.last_four,
            previous_valid_until=now + grace,
        )
    else:
        fields.update(previous_secret_encrypted="", previous_last_four="", previous_valid_until=None)
    return fields


def _rotation_detail(key: TogetherKey, old_last_four: str) -> str:
    if key.previous_valid_until:
        kept = f"kept until {key.previous_valid_until:%Y-%m-%d %H:%M:%S %Z}"
        return f"…{old_last_four} → …{key.last_four}, verified; old secret {kept}"
    return f"…{old_last_four} → …{key.last_four}, verified; old secret destroyed"


def revoke_upstream_key(key: TogetherKey, actor: Actor) -> TogetherKey:
    """Revoke a Together key for good: its ciphertexts are wiped, the proxy refuses it at once."""
    now = timezone.now()
    with transaction.atomic():
        claimed = TogetherKey.objects.filter(pk=key.pk, status=TogetherKey.Status.ACTIVE).update(
            status=TogetherKey.Status.REVOKED,
            revoked_at=now,
            revoked_by=actor.db_user,
            # Final means final: nothing is left that could be decrypted and sent again.
            secret_encrypted="",
            previous_secret_encrypted="",
            previous_last_four="",
            previous_valid_until=None,
        )
        if claimed:
            key.refresh_from_db()
            detail = f"also revoke it at {TOGETHER_KEYS_URL}"
            record(Action.REVOKE, Outcome.SUCCESS, actor, key=key, detail=detail)
            bump_key_cache_version_on_commit()
    if not claimed:
        raise _fail(Action.REVOKE, actor, f"{key.name} is already revoked.", key=key)
    return key


def rollback_upstream_key(key: TogetherKey, actor: Actor) -> TogetherKey:
    """Within the grace window, go back to the secret the last rotation replaced (verified again)."""
    previous = key.previous_secret if key.is_active else None
    if previous is None:
        raise _fail(Action.ROLLBACK, actor, f"{key.name} has no previous secret to go back to.", key=key)
    _verified(Action.ROLLBACK, actor, previous, key=key)
    now, replaced = timezone.now(), key.last_four
    with transaction.atomic():
        claimed = TogetherKey.objects.filter(
            pk=key.pk, status=TogetherKey.Status.ACTIVE, secret_encrypted=key.secret_encrypted
        ).update(**_rotation_fields(key, previous, actor, None, now))
        if claimed:
            key.refresh_from_db()
            detail = f"…{replaced} → …{key.last_four} (previous secret restored, verified)"
            record(Action.ROLLBACK, Outcome.SUCCESS, actor, key=key, detail=detail)
            bump_key_cache_version_on_commit()
    if not claimed:
        raise _fail(Action.ROLLBACK, actor, f"{key.name} changed meanwhile; try again.", key=key)
    return key


# ---- keys we issue (app keys, API tokens) --------------------------------------------------------------

def create_app_key(
    name: str,
    actor: Actor,
    upstream: TogetherKey | None = None,
    allowed_models: Iterable[str] = (),
    rate_limit_per_minute: int | None = None,
    expires_at: datetime | None = None,
) -> tuple[AppKey, str]:
    """Issue an app key for the proxy; the plaintext is returned once and never stored."""
    target = {"key_type": KeyType.APP, "label": name}
    if not name.strip():
        raise _fail(Action.CREATE, actor, "An app key needs a name.", **target)
    if upstream is not None and not upstream.is_active:
        raise _fail(Action.CREATE, actor, f"Upstream key {upstream.name} is revoked.", **target)
    with transaction.atomic():
        app_key = AppKey(
            name=name.strip(),
            upstream_key=upstream,
            allowed_models=list(allowed_models),
            rate_limit_per_minute=rate_limit_per_minute,
            expires_at=expires_at,
            created_by=actor.db_user,
        )
        plaintext = app_key.issue()
        app_key.save()
        record(Action.CREATE, Outcome.SUCCESS, actor, key=app_key, detail=_app_key_summary(app_key))
        bump_key_cache_version_on_commit()
    return app_key, plaintext


def _app_key_summary(app_key: AppKey) -> str:
    upstream = app_key.upstream_key.name if app_key.upstream_key else "default upstream"
    models = ", ".join(app_key.allowed_models) or "all models"
    rate = f"{app_key.rate_limit_per_minute}/min" if app_key.rate_limit_per_minute else "no rate limit"
    expiry = f"expires {app_key.expires_at:%Y-%m-%d %H:%M %Z}" if app_key.expires_at else "no expiry"
    return f"→ {upstream}; {models}; {rate}; {expiry}"


def rotate_issued_key(key: IssuedKeyModel, actor: Actor, grace: timedelta | None = None) -> str:
    """Issue a new secret for an app key or token; the old one keeps working for the grace window."""
    if key.status != key.Status.ACTIVE:
        raise _fail(Action.ROTATE, actor, f"{key} is revoked; revoked keys cannot be rotated.", key=key)
    old_hash = key.secret_hash
    plaintext = key.rotate(grace)
    with transaction.atomic():
        claimed = type(key).objects.filter(pk=key.pk, status=key.Status.ACTIVE, secret_hash=old_hash).update(
            secret_hash=key.secret_hash,
            previous_hash=key.previous_hash,
            previous_valid_until=key.previous_valid_until,
        )
        if claimed:
            kept = f"until {key.previous_valid_until:%Y-%m-%d %H:%M:%S %Z}" if grace else "no longer accepted"
            detail = f"new secret issued; old secret {kept}"
            record(Action.ROTATE, Outcome.SUCCESS, actor, key=key, detail=detail)
            bump_key_cache_version_on_commit()
    if not claimed:
        key.refresh_from_db()
        raise _fail(Action.ROTATE, actor, f"{key} changed meanwhile; try again.", key=key)
    return plaintext


def revoke_issued_key(key: IssuedKeyModel, actor: Actor) -> IssuedKeyModel:
    """Revoke an app key or token at once, grace window included."""
    with transaction.atomic():
        claimed = type(key).objects.filter(pk=key.pk, status=key.Status.ACTIVE).update(
            status=key.Status.REVOKED, revoked_at=timezone.now(), previous_hash="", previous_valid_until=None
        )
        if claimed:
            key.refresh_from_db()
            record(Action.REVOKE, Outcome.SUCCESS, actor, key=key)
            bump_key_cache_version_on_commit()
    if not claimed:
        raise _fail(Action.REVOKE, actor, f"{key} is already revoked.", key=key)
    return key


def record_issued_key_update(key: IssuedKeyModel, actor: Actor, changed: Iterable[str]) -> None:
    """Audit an edit of an issued key's settings (admin form) and let the proxy see it at once."""
    record(Action.UPDATE, Outcome.SUCCESS, actor, key=key, detail="changed: " + ", ".join(changed))
    bump_key_cache_version_on_commit()


# ---- housekeeping ----------------------------------------------------------------------------------------

def expire_grace_windows(now: datetime | None = None) -> int:
    """Destroy every old secret whose grace window has ended; returns how many were destroyed."""
    now = now or timezone.now()
    actor = Actor(via=AuditLog.Via.SYSTEM)
    wiped = 0
    for key in TogetherKey.objects.filter(previous_valid_until__lte=now):
        wiped += _claim_expiry(TogetherKey, key, actor, previous_secret_encrypted="", previous_last_four="")
    for model in (AppKey, ApiToken):
        for issued in model.objects.filter(previous_valid_until__lte=now):
            wiped += _claim_expiry(model, issued, actor, previous_hash="")
    return wiped


def _claim_expiry(model: type, key: object, actor: Actor, **wipe: str) -> int:
    with transaction.atomic():
        claimed = model.objects.filter(pk=key.pk, previous_valid_until=key.previous_valid_until).update(
            previous_valid_until=None, **wipe
        )
        if claimed:
            detail = "grace window over; old secret destroyed"
            record(Action.EXPIRE_GRACE, Outcome.SUCCESS, actor, key=key, detail=detail)
            bump_key_cache_version_on_commit()
    return claimed


# Encrypted columns of other apps (alert channels' targets and secrets), registered from their
# AppConfig.ready() so that rotating the encryption key moves them too; keys never imports those apps.
ENCRYPTED_ELSEWHERE: dict[type[models.Model], tuple[str, ...]] = {}


def register_encrypted_fields(model: type[models.Model], *fields: str) -> None:
    ENCRYPTED_ELSEWHERE[model] = fields


def rotate_encryption_key(actor: Actor) -> int:
    """Re-encrypt every stored secret under the newest FIELD_ENCRYPTION_KEYS entry; returns rows moved."""
    moved, broken = 0, []
    tables = {TogetherKey: ("secret_encrypted", "previous_secret_encrypted"), **ENCRYPTED_ELSEWHERE}
    for model, fields in tables.items():
        for row in model.objects.all():
            try:
                moved += _reencrypt_row(row, fields)
            except crypto.DecryptionError:
                broken.append(str(getattr(row, "name", row.pk)))
    detail = f"{moved} row(s) re-encrypted under the newest encryption key"
    target = {"key_type": KeyType.ENCRYPTION, "label": "FIELD_ENCRYPTION_KEYS"}
    if broken:
        message = f"{detail}; {len(broken)} could not be decrypted: {', '.join(broken)}"
        raise _fail(Action.REENCRYPT, actor, message, **target)
    record(Action.REENCRYPT, Outcome.SUCCESS, actor, detail=detail, **target)
    return moved


def _reencrypt_row(row: models.Model, fields: tuple[str, ...]) -> int:
    moved = {name: crypto.reencrypt(getattr(row, name)) for name in fields if getattr(row, name)}
    if not moved:
        return 0
    # A row changed meanwhile was just written under the newest key; leaving it alone is right.
    unchanged = {name: getattr(row, name) for name in fields}
    return type(row).objects.filter(pk=row.pk, **unchanged).update(**moved)
