"""Email content per alert kind: subject, text and HTML templates under templates/alerts/email/."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.template.loader import render_to_string, select_template
from django.urls import reverse

if TYPE_CHECKING:
    from together_dash.alerts.models import Alert, Notification


def _pick(kind: str, part: str) -> str:
    """The kind's own template when it has one, else the generic one."""
    names = [f"alerts/email/{kind}_{part}", f"alerts/email/generic_{part}"]
    return select_template(names).template.name


def absolute(path: str) -> str:
    return settings.SITE_ROOT.rstrip("/") + path


def alert_context(alert: Alert, transition: str) -> dict[str, Any]:
    context = alert.context or {}
    return {
        "alert": alert,
        "rule": alert.rule,
        "kind": alert.rule.get_kind_display(),
        "transition": transition,
        "c": context,
        "link": absolute(context.get("path") or reverse("alerts-page")),
        "alerts_link": absolute(reverse("alerts-page")),
    }


def render_alert(alert: Alert, transition: str) -> tuple[str, str, str]:
    """(subject, text, html) for one alert transition."""
    context = alert_context(alert, transition)
    text = render_to_string(_pick(alert.rule.kind, "body.txt"), context)
    html = render_to_string(_pick(alert.rule.kind, "body.html"), context)
    return _subject(alert, context), text, html


def render_subject(alert: Alert, transition: str) -> str:
    """The subject line alone (the summary of the other channels' messages)."""
    return _subject(alert, alert_context(alert, transition))


def _subject(alert: Alert, context: dict[str, Any]) -> str:
    subject = render_to_string(_pick(alert.rule.kind, "subject.txt"), context)
    # A header must be one line: templates end with a newline, and a label might hold one.
    return " ".join(subject.split())[:300]


def render_digest(notifications: Sequence[Notification]) -> tuple[str, str, str]:
    """(subject, text, html) of one email that stands for several notifications."""
    context = {
        "notifications": notifications,
        "count": len(notifications),
        "alerts_link": absolute(reverse("alerts-page")),
    }
    subject = render_to_string("alerts/email/digest_subject.txt", context)
    text = render_to_string("alerts/email/digest_body.txt", context)
    html = render_to_string("alerts/email/digest_body.html", context)
    return " ".join(subject.split())[:300], text, html
