"""Writing, filtering and exporting the key audit trail. Nothing here ever sees a secret in clear."""
from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.dateparse import parse_date

from together_dash.core.spreadsheet import defused
from together_dash.keys.models import ApiToken, AppKey, AuditLog, TogetherKey
from together_dash.together.redact import redact

CSV_COLUMNS = (
    "time", "action", "outcome", "key_type", "key_id", "key", "user", "via", "source_address", "detail",
)


@dataclass(frozen=True)
class Actor:
    """Who asked for a key action, and from where."""

    user: Any = None
    via: str = AuditLog.Via.SYSTEM
    source_address: str | None = None

    @classmethod
    def from_request(cls, request: HttpRequest, via: str = AuditLog.Via.WEB) -> Actor:
        # REMOTE_ADDR only: no trusted-proxy setting exists, and X-Forwarded-For is forgeable.
        return cls(user=request.user, via=via, source_address=request.META.get("REMOTE_ADDR") or None)

    @property
    def db_user(self) -> Any:
        """The user to store, or None for commands, the system and anonymous requests."""
        return self.user if getattr(self.user, "is_authenticated", False) else None


def key_type_of(key: object) -> str:
    """The audit key type of a key object."""
    if isinstance(key, TogetherKey):
        return AuditLog.KeyType.UPSTREAM
    if isinstance(key, AppKey):
        return AuditLog.KeyType.APP
    if isinstance(key, ApiToken):
        return AuditLog.KeyType.API_TOKEN
    raise TypeError(f"not a key: {type(key).__name__}")


def label_of(key: object) -> str:
    """A label that identifies a key without revealing it: the name plus last four or public prefix."""
    return str(key)[:120]


def record(
    action: str,
    outcome: str,
    actor: Actor,
    *,
    key: object | None = None,
    key_type: str | None = None,
    label: str = "",
    detail: str = "",
    secrets: Iterable[str] = (),
) -> AuditLog:
    """Write one audit row; the detail is scrubbed of the given secrets and of anything key-shaped."""
    user = actor.db_user
    return AuditLog.objects.create(
        action=action,
        outcome=outcome,
        key_type=key_type or key_type_of(key),
        key_id=getattr(key, "pk", None),
        key_label=label or (label_of(key) if key is not None else ""),
        user=user,
        username=user.get_username() if user else "",
        via=actor.via,
        source_address=actor.source_address,
        detail=redact(detail, tuple(secrets))[:500],
    )


def history(key: object) -> QuerySet[AuditLog]:
    """The audit rows of one key, newest first."""
    return AuditLog.objects.filter(key_type=key_type_of(key), key_id=key.pk)


FILTER_FIELDS = ("action", "outcome", "key_type", "via")


def filtered(params: Mapping[str, str]) -> QuerySet[AuditLog]:
    """Audit rows narrowed by the query-string filters of the audit page and its CSV export."""
    rows = AuditLog.objects.all()
    for name in FILTER_FIELDS:
        if params.get(name):
            rows = rows.filter(**{name: params[name]})
    if params.get("user"):
        rows = rows.filter(username=params["user"])
    if params.get("key_id", "").isdigit():
        rows = rows.filter(key_id=int(params["key_id"]))
    if since := parse_date(params.get("since") or ""):
        rows = rows.filter(created_at__date__gte=since)
    if until := parse_date(params.get("until") or ""):
        rows = rows.filter(created_at__date__lte=until)
    return rows


def csv_row(entry: AuditLog) -> list[str]:
    return [
        entry.created_at.isoformat(), entry.action, entry.outcome, entry.key_type,
        "" if entry.key_id is None else str(entry.key_id), entry.key_label, entry.username,
        entry.via, entry.source_address or "", entry.detail,
    ]


class _Echo:
    """A file-like object whose write returns the line, for streaming CSV."""

    def write(self, value: str) -> str:
        return value


def csv_lines(rows: Iterable[AuditLog]) -> Iterator[str]:
    """The CSV export, one line at a time, header first."""
    writer = csv.writer(_Echo())
    yield writer.writerow(CSV_COLUMNS)
    for entry in rows:
        yield writer.writerow(_defuse(csv_row(entry)))


def _defuse(cells: list[str]) -> list[str]:
    # Labels and details come from admins' input: no cell may run as a formula in a spreadsheet.
    return [defused(cell) for cell in cells]
