"""Alert channels besides email: what each one is sent (Slack, signed webhook, PagerDuty) and the send.

A message is built when the transition is recorded and stored in its outbox row (Notification.body_text),
so a retry an hour later sends the same body and a receiver can tell duplicates apart by
X-Together-Dash-Delivery. What is added only at send time: the webhook's timestamp and signature (so a
receiver's replay window counts from the attempt) and PagerDuty's routing key (never stored in a row).

A message holds the alert's summary, detail, fix and links, never a request body or a secret: every
string passes redact() and the channels' own secrets are cut out of it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.urls import reverse

from together_dash.alerts import targets
from together_dash.alerts.emails import absolute, render_subject
from together_dash.alerts.kinds import Kind
from together_dash.together.errors import TAXONOMY
from together_dash.together.redact import redact

if TYPE_CHECKING:
    from together_dash.alerts.models import Alert, AlertChannel, Notification

EMAIL, SLACK, WEBHOOK, PAGERDUTY = "email", "slack", "webhook", "pagerduty"
SIGNATURE_HEADER = "X-Together-Dash-Signature"
TIMESTAMP_HEADER = "X-Together-Dash-Timestamp"
DELIVERY_HEADER = "X-Together-Dash-Delivery"
EVENT_HEADER = "X-Together-Dash-Event"
USER_AGENT = "together-dash-alerts"
MAX_RETRY_AFTER = 3600  # seconds; a receiver asking for longer is asked again after an hour
ANSWER_LIMIT = 200
MIN_SECRET_PATH = 16  # characters of a refusing receiver's answer kept in last_error
SEVERITY = {
    Kind.BILLING: "critical",
    Kind.KEY_INVALID: "error",
    Kind.POLLER_STALE: "error",
    Kind.LOGS_DROPPED: "error",
}
TEST = "test"  # the transition of a test message (add_alert_channel --test, the admin action)


class ChannelError(Exception):
    """The receiver did not take the message; retry_after is what it asked for (429/503), in seconds."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# ---- targets: checked and shown masked ---------------------------------------------------------------


def clean_target(kind: str, target: str) -> str:
    """The target as stored: addresses for email, a checked URL otherwise; raises ValidationError."""
    target = target.strip()
    if kind == PAGERDUTY and not target:
        target = settings.PAGERDUTY_EVENTS_URL
    if not target:
        raise ValidationError("A target is required.")
    if kind == EMAIL:
        return ", ".join(clean_addresses(target))
    try:
        targets.check_url(target)
    except targets.TargetError as exc:
        raise ValidationError(str(exc)) from None
    return target


def clean_addresses(target: str) -> list[str]:
    addresses = [a.strip() for a in target.replace("\n", ",").split(",") if a.strip()]
    for address in addresses:
        validate_email(address)
    if not addresses:
        raise ValidationError("Give at least one email address.")
    return addresses


def target_hint(kind: str, target: str) -> str:
    """What pages show of a target: email addresses and PagerDuty's URL as they are; else origin + last 4."""
    if kind in (EMAIL, PAGERDUTY):
        return target[:300]
    parts = urlsplit(target)
    rest = target.split(parts.netloc, 1)[-1]
    return f"{parts.scheme}://{parts.netloc}/…{rest[-4:]}" if len(rest) > 1 else target


def secrets_of(channel: AlertChannel) -> tuple[str, ...]:
    """The literal secrets of a channel that must never show: its secret, its URL, a long URL path."""
    if channel.kind == EMAIL:
        return ()
    target = channel.target
    path = urlsplit(target).path
    # A long path may be a token (Slack's is); a short one ("/hook") is ordinary text found elsewhere.
    found = (channel.secret, target, path if len(path) >= MIN_SECRET_PATH else "")
    return tuple(s for s in found if s)


# ---- what is said ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Message:
    """One transition told to a channel; the same facts in every shape."""

    summary: str
    detail: str
    fix: str
    url: str  # the alert's own page
    link: str  # what the alert is about: the key, the error groups, the job
    transition: str
    kind: str
    alert: dict[str, Any] | None = None


def message_for(alert: Alert, transition: str, secrets: tuple[str, ...] = ()) -> Message:
    """The facts of one transition, redacted: summary, detail, fix, links and the alert's fields."""

    def clean(text: str) -> str:
        return redact(str(text), secrets)

    context = alert.context or {}
    url = absolute(reverse("alerts-detail", args=[alert.pk]))
    link = absolute(context["path"]) if context.get("path") else url
    fields = {
        "id": alert.pk,
        "kind": alert.rule.kind,
        "subject": clean(alert.subject),
        "label": clean(alert.label),
        "state": alert.state,
        "transition": transition,
        "fired_at": alert.fired_at.isoformat() if alert.fired_at else None,
        "resolved_at": alert.resolved_at.isoformat() if alert.resolved_at else None,
        "url": url,
    }
    summary = render_subject(alert, transition).removeprefix("[together-dash] ")
    detail, fix = _detail(alert, transition), _fix(alert, transition)
    return Message(clean(summary), clean(detail), clean(fix), url, link, transition, alert.rule.kind, fields)


def channel_test_message(channel: AlertChannel) -> Message:
    url = absolute(reverse("alerts-page"))
    detail = f"The channel {channel.name!r} works: together-dash alerts will arrive here."
    return Message(f"Test message from together-dash ({channel.name})", detail, "", url, url, TEST, TEST)


def _detail(alert: Alert, transition: str) -> str:
    context = alert.context or {}
    if context.get("detail"):
        return str(context["detail"])
    if alert.rule.kind != Kind.BILLING:
        return ""
    name, failed, since = (
        context.get("key_name", ""),
        context.get("failed_since", 0),
        context.get("first_seen"),
    )
    if transition == "resolved":
        return f"Requests on the key {name} succeed again; {failed} failed with HTTP 402 since {since}."
    detail = (
        f"Together answers HTTP 402 (insufficient credits) on the key {name}: {failed} failed requests"
        f" since {since} (seen by {context.get('source', 'traffic')})."
    )
    if context.get("batch_id"):
        detail += (
            f" Batch {context['batch_id']} was interrupted: {context.get('batch_remainder')} requests"
            " have no output yet."
        )
    return detail


def _fix(alert: Alert, transition: str) -> str:
    if transition == "resolved":
        return ""
    context = alert.context or {}
    if context.get("fix"):
        return str(context["fix"])
    return TAXONOMY["insufficient_credits"].fix if alert.rule.kind == Kind.BILLING else ""


def wants(kind: str, transition: str, notify: bool) -> bool:
    """PagerDuty mirrors the alert's state (trigger, resolve; no reminders); the others follow the rule."""
    if kind == PAGERDUTY:
        return transition in ("fired", "resolved")
    return notify


# ---- the shapes --------------------------------------------------------------------------------------


def body_for(kind: str, message: Message) -> dict[str, Any]:
    """The JSON document a channel of this kind is sent (PagerDuty's routing key is added at send time)."""
    return {SLACK: slack_body, WEBHOOK: webhook_body, PAGERDUTY: pagerduty_body}[kind](message)


def slack_body(message: Message) -> dict[str, Any]:
    """Slack's incoming-webhook shape: text for notifications, blocks for the channel."""
    mark = {"resolved": ":white_check_mark:", TEST: ":wave:"}.get(message.transition, ":rotating_light:")
    text = f"{mark} *{_slack_escape(message.summary)}*"
    if message.detail:
        text += f"\n{_slack_escape(message.detail)}"
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
    if message.fix:
        fix = f"*The fix:* {_slack_escape(message.fix)}"
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": fix}})
    links = f"<{message.url}|Open the alert>"
    if message.link != message.url:
        links += f" · <{message.link}|Details>"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": links}]})
    return {"text": f"{message.summary} {message.url}", "blocks": blocks}


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def webhook_body(message: Message) -> dict[str, Any]:
    return {
        "alert": message.alert,
        "summary": message.summary,
        "detail": message.detail,
        "fix": message.fix,
        "link": message.link,
    }


def dedup_key(alert_id: int | None) -> str:
    return f"together-dash-alert-{alert_id}"


def pagerduty_body(message: Message) -> dict[str, Any]:
    """Events API v2: trigger on fired, resolve on resolved, one dedup_key per alert."""
    alert = message.alert or {}
    key = dedup_key(alert["id"]) if alert else "together-dash-test"
    if message.transition == "resolved":
        return {"event_action": "resolve", "dedup_key": key}
    details = {"detail": message.detail, "fix": message.fix, "subject": alert.get("subject", "")}
    return {
        "event_action": "trigger",
        "dedup_key": key,
        "payload": {
            "summary": message.summary[:1024],
            "source": urlsplit(settings.SITE_ROOT).netloc or "together-dash",
            "severity": "info" if message.transition == TEST else SEVERITY.get(message.kind, "warning"),
            "component": alert.get("label") or alert.get("subject") or "together-dash",
            "group": message.kind,
            "class": message.kind,
            "custom_details": {name: value for name, value in details.items() if value},
        },
        "links": [{"href": message.url, "text": "The alert in together-dash"}]
        + ([{"href": message.link, "text": "Details"}] if message.link != message.url else []),
        "client": "together-dash",
        "client_url": absolute(reverse("alerts-page")),
    }


def serialized(body: dict[str, Any]) -> str:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


# ---- the send ----------------------------------------------------------------------------------------


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The webhook signature header's value: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def request_for(channel: AlertChannel, notification: Notification) -> tuple[bytes, dict[str, str]]:
    """The body and headers of one attempt."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        DELIVERY_HEADER: str(notification.pk),
        EVENT_HEADER: notification.transition,
    }
    body = notification.body_text
    if channel.kind == PAGERDUTY:
        body = serialized({"routing_key": channel.secret, **json.loads(body)})
    raw = body.encode()
    if channel.kind == WEBHOOK:
        timestamp = str(int(time.time()))
        headers[TIMESTAMP_HEADER] = timestamp
        headers[SIGNATURE_HEADER] = signature(channel.secret, timestamp, raw)
    return raw, headers


def send(channel: AlertChannel, notification: Notification) -> None:
    """POST one message to the channel's checked address; returns on 2xx, raises ChannelError otherwise."""
    raw, headers = request_for(channel, notification)
    try:
        pinned = targets.pin(channel.target)
    except targets.TargetError as exc:
        raise ChannelError(str(exc)) from None
    headers["Host"] = pinned.host_header
    extensions = {"sni_hostname": pinned.tls_hostname} if pinned.tls_hostname else {}
    with httpx.Client(
        timeout=settings.ALERT_CHANNEL_TIMEOUT, trust_env=False, follow_redirects=False
    ) as client:
        request = client.build_request(
            "POST", pinned.url, content=raw, headers=headers, extensions=extensions
        )
        response = client.send(request)
    if not 200 <= response.status_code < 300:
        answer = " ".join(response.text.split())[:ANSWER_LIMIT]
        message = f"HTTP {response.status_code} from {channel.target_hint}" + (
            f": {answer}" if answer else ""
        )
        raise ChannelError(message, retry_after=_retry_after(response))


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds a 429 or 503 asked us to wait (Retry-After in seconds or as a date), capped at an hour."""
    value = response.headers.get("retry-after", "").strip()
    if response.status_code not in (429, 503) or not value:
        return None
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 1.0), MAX_RETRY_AFTER)


def error_text(channel: AlertChannel, exc: BaseException) -> str:
    """Why a send failed, for last_error and the log: never the channel's URL path or secret."""
    text = str(exc) if isinstance(exc, ChannelError) else f"{type(exc).__name__}: {exc}"
    try:
        secrets = secrets_of(channel)
    except Exception:  # an undecryptable secret: the stored hint is all that can be shown anyway
        secrets = ()
    return redact(f"{channel.name}: {text}", secrets)[:500]
