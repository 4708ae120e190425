"""System checks: alerts that could reach nobody are reported at startup, not found out in an outage."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Warning, register


@register()
def check_alert_delivery(app_configs: Any = None, **kwargs: Any) -> list[Warning]:
    if settings.DEBUG:
        return []  # development: console email and no recipients are the expected defaults
    warnings = []
    if not settings.ALERT_EMAILS:
        warnings.append(
            Warning(
                "ALERT_EMAILS is empty: alert emails (credits exhausted first) go only to rule recipients.",
                hint="Set ALERT_EMAILS=billing-owner@example.com,oncall@example.com.",
                id="together_dash.alerts.W001",
            )
        )
    if "smtp" not in settings.EMAIL_BACKEND:
        warnings.append(
            Warning(
                f"EMAIL_BACKEND is {settings.EMAIL_BACKEND}: alert emails are not sent anywhere.",
                hint="Set EMAIL_URL, e.g. smtp+tls://user:password@smtp.example.com:587.",
                id="together_dash.alerts.W002",
            )
        )
    return warnings
