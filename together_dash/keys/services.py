"""Issuing app keys from code and commands: names in, audited lifecycle calls out."""
from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from django.utils import timezone

from together_dash.keys import lifecycle
from together_dash.keys.audit import Actor
from together_dash.keys.lifecycle import KeyActionError
from together_dash.keys.models import AppKey, AuditLog, TogetherKey


def upstream_by_name(name: str) -> TogetherKey:
    """The active upstream key with this name; KeyActionError naming the active ones otherwise."""
    key = TogetherKey.objects.filter(name=name).first()
    if key is not None and key.is_active:
        return key
    active_keys = TogetherKey.objects.filter(status=TogetherKey.Status.ACTIVE)
    active = ", ".join(active_keys.values_list("name", flat=True))
    problem = "is revoked" if key is not None else "does not exist"
    raise KeyActionError(f"The upstream key {name!r} {problem}. Active upstream keys: {active or 'none'}.")


def create_app_key(
    name: str,
    upstream: TogetherKey | str | None = None,
    user: Any = None,
    *,
    expires_in: timedelta | None = None,
    allowed_models: Iterable[str] = (),
    rate_limit_per_minute: int | None = None,
    via: str = AuditLog.Via.COMMAND,
) -> tuple[AppKey, str]:
    """Issue an app key (audited); returns the row and the plaintext, which is never stored."""
    if isinstance(upstream, str):
        upstream = upstream_by_name(upstream)
    if rate_limit_per_minute is not None and rate_limit_per_minute < 1:
        raise KeyActionError("The rate limit must be at least 1 request per minute.")
    models = [model.strip() for model in allowed_models if model.strip()]
    return lifecycle.create_app_key(
        name,
        Actor(user=user, via=via),
        upstream=upstream,
        allowed_models=models,
        rate_limit_per_minute=rate_limit_per_minute,
        expires_at=timezone.now() + expires_in if expires_in else None,
    )
