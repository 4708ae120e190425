"""Connectivity check: DNS, TLS and GET /models per key, whoami and rate-limit headers, a verdict per key.

Exit codes for scripts: 0 every key ok, 1 some key failed (or no key to check), 2 Together was
reachable with no key at all (DNS, TLS or the connection failed for every key).
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings

from together_dash.keys.crypto import DecryptionError
from together_dash.keys.models import TogetherKey
from together_dash.together.client import TogetherAPIError, TogetherClient
from together_dash.together.ratelimits import RateLimitInfo

OK, AUTH_FAILED, UNREACHABLE, DEGRADED = "ok", "auth_failed", "unreachable", "degraded"
DEFAULT_TIMEOUT = 10.0


@dataclass(slots=True)
class Step:
    """One probe: passed or not (None when skipped), what it found, how long it took."""

    ok: bool | None
    detail: str
    ms: float | None = None


@dataclass(slots=True)
class KeyReport:
    """Everything checked with one key; never holds the secret, only its last four characters."""

    name: str
    last_four: str
    verdict: str = UNREACHABLE
    models: Step | None = None
    whoami: Step | None = None
    ratelimit: dict[str, float] = field(default_factory=dict)
    request_id: str | None = None


@dataclass(slots=True)
class ConnectivityReport:
    base_url: str
    dns: Step
    tls: Step
    keys: list[KeyReport] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        verdicts = [key.verdict for key in self.keys]
        if verdicts and all(verdict == OK for verdict in verdicts):
            return 0
        if verdicts and all(verdict == UNREACHABLE for verdict in verdicts):
            return 2
        return 1

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "exit_code": self.exit_code}


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 1)


def _host_port(base_url: str) -> tuple[str, int, str]:
    parts = urlsplit(base_url)
    default = 443 if parts.scheme == "https" else 80
    return parts.hostname or "", parts.port or default, parts.scheme


def check_dns(host: str, port: int, timeout: float) -> Step:
    """Resolve the host; getaddrinfo has no timeout of its own, so it runs in a thread we stop waiting for."""
    started = time.perf_counter()
    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    try:
        infos = future.result(timeout=timeout)
    except FutureTimeout:
        return Step(False, f"{host}: no answer within {timeout:g} s", _ms(started))
    except OSError as exc:
        return Step(False, f"{host}: {exc}", _ms(started))
    finally:
        pool.shutdown(wait=False)
    addresses = sorted({info[4][0] for info in infos})
    return Step(True, f"{host} -> {', '.join(addresses)}", _ms(started))


def check_tls(host: str, port: int, scheme: str, timeout: float) -> Step:
    """A TLS handshake with certificate verification, as httpx will do it."""
    if scheme != "https":
        return Step(None, f"skipped ({scheme})")
    started = time.perf_counter()
    context = ssl.create_default_context()
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname=host) as tls:
                cert = tls.getpeercert() or {}
                version = tls.version()
    except (OSError, ssl.SSLError) as exc:
        return Step(False, f"{host}:{port}: {exc}", _ms(started))
    expires = cert.get("notAfter", "unknown")
    return Step(True, f"{version}, certificate valid until {expires}", _ms(started))


def _ratelimit(info: RateLimitInfo) -> dict[str, float]:
    return {name: value for name, value in asdict(info).items() if value is not None}


def check_key(name: str, last_four: str, secret: str, base_url: str, timeout: float) -> KeyReport:
    """GET /models (free) and GET /whoami with one key."""
    report = KeyReport(name=name, last_four=last_four)
    with TogetherClient(
        secret, base_url=base_url, timeout=timeout, connect_timeout=timeout, max_retries=0
    ) as client:
        report.models = _probe_models(client, report)
        if report.models.ok:
            report.whoami = _probe_whoami(client)
    report.verdict = _verdict(report)
    return report


# Details read "401 (invalid_api_key) message": "api_key: <word>" would look like a secret to redact().
def _probe_models(client: TogetherClient, report: KeyReport) -> Step:
    started = time.perf_counter()
    try:
        result = client.list_models()
    except TogetherAPIError as exc:
        report.ratelimit, report.request_id = _ratelimit(exc.ratelimit), exc.request_id
        report.verdict = _failure_verdict(exc)
        status = exc.status if exc.status is not None else "no response"
        return Step(False, f"GET /models: {status} ({exc.kind}) {exc}", _ms(started))
    report.ratelimit, report.request_id = _ratelimit(result.ratelimit), result.request_id
    detail = f"GET /models: {result.status}, {len(result.data)} models"
    return Step(True, detail, round(result.elapsed_ms, 1))


def _probe_whoami(client: TogetherClient) -> Step:
    started = time.perf_counter()
    try:
        result = client.whoami()
    except TogetherAPIError as exc:
        return Step(False, f"GET /whoami: {exc.status} ({exc.kind}) {exc}", _ms(started))
    who = result.data
    names = [value for value in (who.organization_name, who.project_name) if value]
    return Step(
        True, f"GET /whoami: {' / '.join(names) or 'no organization name'}", round(result.elapsed_ms, 1)
    )


def _failure_verdict(exc: TogetherAPIError) -> str:
    if exc.category == "auth":
        return AUTH_FAILED
    if exc.category == "network":
        return UNREACHABLE
    return DEGRADED


def _verdict(report: KeyReport) -> str:
    if report.models is None or not report.models.ok:
        return report.verdict
    # GET /models worked; a failing whoami means the key works but the account view is partial.
    return OK if report.whoami is not None and report.whoami.ok else DEGRADED


def _unusable(key: TogetherKey, reason: str) -> KeyReport:
    return KeyReport(name=key.name, last_four=key.last_four, verdict=AUTH_FAILED, models=Step(False, reason))


def keys_to_check(name: str | None = None) -> list[TogetherKey]:
    """The active keys, or the one named (whatever its status)."""
    if name:
        return list(TogetherKey.objects.filter(name=name))
    return list(TogetherKey.objects.filter(status=TogetherKey.Status.ACTIVE))


def check_connectivity(
    keys: Iterable[TogetherKey], base_url: str | None = None, timeout: float = DEFAULT_TIMEOUT
) -> ConnectivityReport:
    """Check the network path once, then every key; a failed DNS or TLS step makes every key unreachable."""
    base_url = base_url or settings.TOGETHER_BASE_URL
    host, port, scheme = _host_port(base_url)
    report = ConnectivityReport(
        base_url=base_url, dns=check_dns(host, port, timeout), tls=Step(None, "skipped")
    )
    if report.dns.ok:
        report.tls = check_tls(host, port, scheme, timeout)
    network_ok = report.dns.ok and report.tls.ok is not False
    for key in keys:
        report.keys.append(_check_one(key, base_url, timeout, network_ok))
    return report


def _check_one(key: TogetherKey, base_url: str, timeout: float, network_ok: bool) -> KeyReport:
    if not network_ok:
        reason = "not tried: DNS or TLS failed"
        return KeyReport(name=key.name, last_four=key.last_four, models=Step(False, reason))
    try:
        secret = key.secret
    except DecryptionError:
        return _unusable(key, "the stored secret cannot be decrypted (FIELD_ENCRYPTION_KEYS changed?)")
    return check_key(key.name, key.last_four, secret, base_url, timeout)


def format_report(report: ConnectivityReport) -> str:
    """Plain text for the terminal and the debug bundle."""
    lines = [f"Base URL  {report.base_url}", _step_line("DNS", report.dns), _step_line("TLS", report.tls)]
    if not report.keys:
        lines.append("No Together key to check: add one with `manage.py add_key` or on the Keys page.")
    for key in report.keys:
        lines.append(f"key {key.name} (…{key.last_four}): {key.verdict}")
        lines += [_step_line("  ", step) for step in (key.models, key.whoami) if step is not None]
        if key.ratelimit:
            lines.append(
                "    rate limit: " + ", ".join(f"{k}={_number(v)}" for k, v in key.ratelimit.items())
            )
    lines.append(f"exit code {report.exit_code}")
    return "\n".join(lines)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.3f}"


def _step_line(label: str, step: Step) -> str:
    mark = {True: "ok  ", False: "FAIL", None: "-   "}[step.ok]
    took = f" ({step.ms:g} ms)" if step.ms is not None else ""
    return f"{label:<4} {mark} {step.detail}{took}"
