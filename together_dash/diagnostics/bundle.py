"""The debug bundle: a zip of JSON files describing this installation, safe to attach to a bug report.

Nothing in it is trusted to be clean already: every string goes through redact() with the literal
secrets of every Together key (current and previous), the app's own secrets and the known key shapes,
and any 12-character piece of a known secret left over (stored text is truncated, so a key cut in
half can survive a literal replacement) is scrubbed as well.
"""

from __future__ import annotations

import io
import json
import platform
import sys
import zipfile
from collections.abc import Callable, Iterable
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.db import connection
from django.db.models import Count
from django.utils import timezone

from together_dash.catalog.models import ModelChange, ModelInfo
from together_dash.diagnostics.connectivity import check_connectivity, format_report
from together_dash.keys.crypto import DecryptionError
from together_dash.keys.models import AppKey, RateLimitSnapshot, TogetherKey
from together_dash.pollers.models import PollerHeartbeat
from together_dash.together.redact import REDACTED, redact
from together_dash.traffic.models import ErrorGroup, RequestLog

FRAGMENT = 12  # a run this long of a secret is treated as the secret itself
SNAPSHOTS, ERROR_GROUPS, LOG_SAMPLE, CHANGES = 200, 100, 200, 50
PACKAGES = ("together-dash", "django", "django-ninja", "httpx", "celery", "together", "psycopg", "uvicorn")

README = """together-dash debug bundle, generated {generated}.

Every value was redacted: Together keys appear only as their last four characters, and any text
matching a known secret (or a 12-character piece of one) reads "{redacted}".
Request/response bodies: {bodies}.

versions.json      Python, platform and package versions
settings.json      the settings that shape behaviour (no secret values; only whether they are set)
connectivity.json  DNS, TLS, GET /models and whoami per active key ({connectivity})
keys.json          Together keys (name, last four, status, health) and app keys (prefix only)
rate_limits.json   the latest rate-limit snapshots
error_groups.json  the most recently seen error groups
request_logs.json  the latest request logs (metadata)
pollers.json       poller heartbeats
catalog.json       model catalog summary and recent changes
"""


# ---- redaction ---------------------------------------------------------------------------------------


def known_secrets() -> list[str]:
    """Every secret this installation knows, so each can be redacted literally."""
    found = [settings.SECRET_KEY, settings.TOGETHER_API_KEY, *settings.FIELD_ENCRYPTION_KEYS]
    found += [
        settings.DATABASES["default"].get("PASSWORD") or "",
        getattr(settings, "EMAIL_HOST_PASSWORD", ""),
    ]
    for key in TogetherKey.objects.all():
        found += _key_secrets(key)
    return sorted({secret for secret in found if secret and len(secret) >= 4}, key=len, reverse=True)


def _key_secrets(key: TogetherKey) -> list[str]:
    try:
        return [key.secret, key.previous_secret or ""]
    except DecryptionError:  # unreadable means it cannot leak through us either
        return []


class Scrubber:
    """Redacts known secrets, their 12-character fragments and secret-shaped text from strings."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = tuple(secrets)
        self.fragments = {
            secret[start : start + FRAGMENT]
            for secret in self.secrets
            for start in range(len(secret) - FRAGMENT + 1)
        }

    def text(self, value: str) -> str:
        return self._fragments(redact(value, self.secrets))

    def _fragments(self, value: str) -> str:
        if not self.fragments or len(value) < FRAGMENT:
            return value
        hidden = bytearray(len(value))
        for start in range(len(value) - FRAGMENT + 1):
            if value[start : start + FRAGMENT] in self.fragments:
                hidden[start : start + FRAGMENT] = b"\1" * FRAGMENT
        if not any(hidden):
            return value
        return _replace_marked(value, hidden)

    def data(self, value: Any) -> Any:
        """The same structure with every string (keys included) scrubbed."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(str(k)): self.data(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.data(item) for item in value]
        return value


def _replace_marked(value: str, hidden: bytearray) -> str:
    out, index = [], 0
    while index < len(value):
        if hidden[index]:
            while index < len(value) and hidden[index]:
                index += 1
            out.append(REDACTED)
        else:
            out.append(value[index])
            index += 1
    return "".join(out)


# ---- sections ----------------------------------------------------------------------------------------


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def versions() -> dict[str, Any]:
    return {
        "python": sys.version,
        "platform": platform.platform(),
        "database": f"{connection.vendor} {'.'.join(map(str, connection.get_database_version()))}",
        "packages": {package: _version(package) for package in PACKAGES},
    }


def settings_summary() -> dict[str, Any]:
    """Behaviour-shaping settings; secrets only as "set or not", URLs without credentials."""
    db = settings.DATABASES["default"]
    names = (
        "DEBUG",
        "DEMO_MODE",
        "TOGETHER_BASE_URL",
        "TOGETHER_TIMEOUT",
        "TOGETHER_CONNECT_TIMEOUT",
        "TIME_ZONE",
        "ALLOWED_HOSTS",
        "SITE_ROOT",
        "EMAIL_BACKEND",
        "ALERT_EMAILS",
        "PROXY_PASSTHROUGH",
        "PROXY_BODY_SAMPLE_RATE",
        "PROXY_LOG_BUFFER_SIZE",
        "POLLER_CONCURRENCY",
        "POLLER_TIMEOUT",
        "REQUEST_LOG_RETENTION_DAYS",
        "CELERY_TASK_ALWAYS_EAGER",
    )
    summary = {name: getattr(settings, name, None) for name in names}
    for name in ("TOGETHER_BASE_URL", "SITE_ROOT"):
        summary[name] = _without_credentials(summary[name] or "")
    summary.update(
        database_engine=db["ENGINE"],
        database_host=db.get("HOST") or "",
        celery_broker=urlsplit(settings.CELERY_BROKER_URL).scheme,
        together_api_key_set=bool(settings.TOGETHER_API_KEY),
        secret_key_from_env=settings.SECRET_KEY_FROM_ENV,
        field_encryption_keys_count=len(settings.FIELD_ENCRYPTION_KEYS),
    )
    return summary


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]).geturl()


def connectivity() -> dict[str, Any]:
    keys = TogetherKey.objects.filter(status=TogetherKey.Status.ACTIVE)
    report = check_connectivity(keys, timeout=5.0)
    return {**report.to_dict(), "text": format_report(report)}


def keys() -> dict[str, Any]:
    upstream = [
        {
            "name": key.name,
            "last_four": key.last_four,
            "status": key.status,
            "health": key.health,
            "health_checked_at": key.health_checked_at,
            "health_detail": key.health_detail,
            "organization_name": key.organization_name,
            "project_name": key.project_name,
            "created_at": key.created_at,
            "rotated_at": key.rotated_at,
            "revoked_at": key.revoked_at,
            "in_grace": key.in_grace,
        }
        for key in TogetherKey.objects.all()
    ]
    app = list(
        AppKey.objects.values("name", "prefix", "status", "upstream_key__name", "expires_at", "last_used_at")
    )
    return {"upstream_keys": upstream, "app_keys": app}


def rate_limits() -> list[dict[str, Any]]:
    rows = RateLimitSnapshot.objects.select_related("key").order_by("-taken_at")[:SNAPSHOTS]
    fields = (
        "model",
        "taken_at",
        "source",
        "request_limit",
        "request_remaining",
        "reset_seconds",
        "token_limit",
        "token_remaining",
        "headroom_pct",
    )
    return [{"key": row.key.name, **{name: getattr(row, name) for name in fields}} for row in rows]


def error_groups() -> list[dict[str, Any]]:
    return list(
        ErrorGroup.objects.order_by("-last_seen").values(
            "category",
            "kind",
            "model",
            "endpoint",
            "upstream_key__name",
            "first_seen",
            "last_seen",
            "count",
            "last_status",
            "last_message",
            "state",
        )[:ERROR_GROUPS]
    )


def request_logs(include_bodies: bool) -> list[dict[str, Any]]:
    """Metadata of the latest requests; the stored error text only when bodies are opted in."""
    fields = [
        "created_at",
        "source",
        "method",
        "endpoint",
        "model_requested",
        "model_served",
        "stream",
        "status_code",
        "latency_ms",
        "ttft_ms",
        "prompt_tokens",
        "completion_tokens",
        "request_id",
        "category",
        "kind",
        "upstream_key__name",
        "app_key__prefix",
    ]
    if include_bodies:
        fields.append("error_message")
    return list(RequestLog.objects.order_by("-created_at", "-id").values(*fields)[:LOG_SAMPLE])


def pollers() -> list[dict[str, Any]]:
    return [
        {
            "name": beat.name,
            "status": beat.status,
            "interval_seconds": beat.interval_seconds,
            "last_started": beat.last_started,
            "last_success": beat.last_success,
            "last_error_at": beat.last_error_at,
            "last_error": beat.last_error,
            "last_duration_ms": beat.last_duration_ms,
            "run_count": beat.run_count,
            "error_count": beat.error_count,
        }
        for beat in PollerHeartbeat.objects.all()
    ]


def catalog() -> dict[str, Any]:
    by_state = dict(ModelInfo.objects.values_list("state").annotate(n=Count("id")).order_by())
    by_type = dict(ModelInfo.objects.values_list("type").annotate(n=Count("id")).order_by())
    removed = ModelInfo.objects.filter(state=ModelInfo.State.REMOVED).values(
        "model_id", "removed_at", "last_used_at", "successor"
    )
    changes = ModelChange.objects.select_related("model").order_by("-at", "-id")[:CHANGES]
    return {
        "models": sum(by_state.values()),
        "by_state": by_state,
        "by_type": by_type,
        "removed": list(removed),
        "recent_changes": [
            {"model": c.model.model_id, "kind": c.kind, "at": c.at, "before": c.before, "after": c.after}
            for c in changes
        ],
    }


# ---- the zip -----------------------------------------------------------------------------------------


def _json(value: Any) -> str:
    return json.dumps(value, indent=2, default=_default, sort_keys=True)


def _default(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _section(build: Callable[[], Any]) -> Any:
    """A failing section is reported in its file instead of losing the whole bundle."""
    try:
        return build()
    except Exception as exc:  # noqa: BLE001 - the bundle exists to debug broken installations
        return {"error": f"{type(exc).__name__}: {exc}"}


def sections(include_bodies: bool, with_connectivity: bool) -> dict[str, Callable[[], Any]]:
    skipped = {"skipped": "connectivity was not checked (--skip-connectivity)"}
    return {
        "versions.json": versions,
        "settings.json": settings_summary,
        "connectivity.json": connectivity if with_connectivity else lambda: skipped,
        "keys.json": keys,
        "rate_limits.json": rate_limits,
        "error_groups.json": error_groups,
        "request_logs.json": lambda: request_logs(include_bodies),
        "pollers.json": pollers,
        "catalog.json": catalog,
    }


def build_bundle(include_bodies: bool = False, with_connectivity: bool = True) -> bytes:
    """The bundle as zip bytes: a README.txt and one redacted JSON file per section."""
    scrub = Scrubber(known_secrets())
    readme = README.format(
        generated=timezone.now().isoformat(timespec="seconds"),
        redacted=REDACTED,
        bodies="error message text included (opted in)" if include_bodies else "not included",
        connectivity="checked while building" if with_connectivity else "skipped",
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("README.txt", readme)
        for name, build in sections(include_bodies, with_connectivity).items():
            archive.writestr(name, _json(scrub.data(_jsonable(_section(build)))))
    return buffer.getvalue()


def _jsonable(value: Any) -> Any:
    """Round-trip through JSON first, so dates and decimals are strings the scrubber can see."""
    return json.loads(json.dumps(value, default=_default))


def bundle_filename() -> str:
    return f"together-dash-debug-{timezone.now():%Y%m%d-%H%M%S}.zip"
