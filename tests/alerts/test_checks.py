"""System checks: an alert setup that reaches nobody is reported when DEBUG is off."""

from __future__ import annotations

from together_dash.alerts.checks import check_alert_delivery


def ids(settings: object) -> list[str]:
    return [message.id for message in check_alert_delivery()]


def test_without_recipients_or_smtp_in_production_it_warns(settings: object) -> None:
    settings.DEBUG = False
    settings.ALERT_EMAILS = []
    settings.EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"

    assert ids(settings) == ["together_dash.alerts.W001", "together_dash.alerts.W002"]


def test_a_configured_production_setup_passes(settings: object) -> None:
    settings.DEBUG = False
    settings.ALERT_EMAILS = ["billing@example.com"]
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"

    assert ids(settings) == []


def test_development_defaults_do_not_warn(settings: object) -> None:
    settings.DEBUG = True
    settings.ALERT_EMAILS = []

    assert ids(settings) == []
