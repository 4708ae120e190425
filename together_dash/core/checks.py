"""System checks that report production misconfiguration with stable ids."""
from __future__ import annotations

import os
from typing import Any

from cryptography.fernet import Fernet
from django.conf import settings
from django.core.checks import Error, Tags, Warning, register


@register(Tags.security, deploy=True)
def check_secrets(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """Production must not run on generated, throwaway secrets."""
    errors = []
    if not settings.DEBUG and not settings.SECRET_KEY_FROM_ENV:
        errors.append(
            Error(
                "SECRET_KEY is not set while DEBUG is off.",
                hint="Set SECRET_KEY in the environment to a long random string.",
                id="together_dash.E001",
            )
        )
    if not settings.DEBUG and not settings.FIELD_ENCRYPTION_KEYS_FROM_ENV:
        errors.append(
            Error(
                "FIELD_ENCRYPTION_KEYS is not set while DEBUG is off; stored Together keys could not be "
                "decrypted after a restart.",
                hint="Generate one with: python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())'",
                id="together_dash.E002",
            )
        )
    return errors


@register()
def check_encryption_keys(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """Every FIELD_ENCRYPTION_KEYS entry must be a valid Fernet key."""
    errors = []
    for index, key in enumerate(settings.FIELD_ENCRYPTION_KEYS):
        try:
            Fernet(key)
        except (ValueError, TypeError):
            errors.append(
                Error(
                    f"FIELD_ENCRYPTION_KEYS entry #{index + 1} is not a valid Fernet key.",
                    hint="Each entry must be 32 url-safe base64-encoded bytes.",
                    id="together_dash.E003",
                )
            )
    return errors


@register()
def check_upstream(app_configs: Any = None, **kwargs: Any) -> list[Warning | Error]:
    """The upstream URL must be absolute, and real email must be configured for alerts."""
    messages: list[Warning | Error] = []
    if not settings.TOGETHER_BASE_URL.startswith(("http://", "https://")):
        messages.append(
            Error(
                f"TOGETHER_BASE_URL must be an absolute http(s) URL, got {settings.TOGETHER_BASE_URL!r}.",
                id="together_dash.E004",
            )
        )
    if not settings.DEBUG and settings.EMAIL_BACKEND.endswith("console.EmailBackend"):
        messages.append(
            Warning(
                "Email goes to the console while DEBUG is off: alert emails will not reach anyone.",
                hint="Set EMAIL_URL, e.g. smtp+tls://user:password@smtp.example.com:587.",
                id="together_dash.W001",
            )
        )
    if not settings.DEBUG and not settings.ALERT_EMAILS:
        messages.append(
            Warning(
                "ALERT_EMAILS is empty: billing (402) alerts have no recipient.",
                hint="Set ALERT_EMAILS to a comma-separated list of addresses.",
                id="together_dash.W002",
            )
        )
    return messages


@register()
def check_metrics(app_configs: Any = None, **kwargs: Any) -> list[Warning | Error]:
    """Prometheus needs the token in production, and the processes a folder to share their series in."""
    messages: list[Warning | Error] = []
    if not settings.DEBUG and not settings.METRICS_TOKEN:
        messages.append(
            Warning(
                "METRICS_TOKEN is not set: /metrics answers 404, so Prometheus cannot scrape the dashboard.",
                hint="Set METRICS_TOKEN to a long random string (python -c 'import secrets; "
                "print(secrets.token_urlsafe(32))') and give it to Prometheus as its bearer credentials.",
                id="together_dash.W003",
            )
        )
    folder = settings.METRICS_MULTIPROC_DIR
    if folder and os.path.exists(folder) and not os.path.isdir(folder):
        messages.append(
            Error(
                f"PROMETHEUS_MULTIPROC_DIR={folder!r} is not a folder: the web processes cannot share "
                "their series there.",
                hint="Point it at a folder only they use (the default is var/prometheus), or set it empty "
                "to have each process report only itself.",
                id="together_dash.E006",
            )
        )
    return messages


OIDC_REQUIRED = ("OIDC_ISSUER", "OIDC_CLIENT_ID", "OIDC_CLIENT_SECRET")


@register(Tags.security)
def check_single_sign_on(app_configs: Any = None, **kwargs: Any) -> list[Warning | Error]:
    """Single sign-on needs all three OIDC settings, groups that grant a role, and a way to sign in."""
    messages: list[Warning | Error] = []
    given = [name for name in OIDC_REQUIRED if getattr(settings, name)]
    if given and len(given) < len(OIDC_REQUIRED):
        missing = ", ".join(name for name in OIDC_REQUIRED if name not in given)
        messages.append(
            Warning(
                f"Single sign-on is half configured: {', '.join(given)} set but {missing} missing, so the "
                "login page offers no single sign-on.",
                hint="Set all of OIDC_ISSUER, OIDC_CLIENT_ID and OIDC_CLIENT_SECRET, or none of them.",
                id="together_dash.W010",
            )
        )
    if settings.OIDC_ISSUER and not settings.OIDC_ISSUER.startswith(("https://", "http://")):
        messages.append(
            Error(
                f"OIDC_ISSUER must be an absolute http(s) URL, got {settings.OIDC_ISSUER!r}.",
                hint="Use the issuer exactly as the provider names it, e.g. https://sso.example.com/realms/acme.",
                id="together_dash.E010",
            )
        )
    if settings.OIDC_ENABLED and not (settings.OIDC_VIEWER_GROUPS or settings.OIDC_KEY_ADMIN_GROUPS):
        messages.append(
            Warning(
                "Single sign-on is on but neither OIDC_VIEWER_GROUPS nor OIDC_KEY_ADMIN_GROUPS is set: every "
                "user who signs in lands on the \"no role\" page.",
                hint=f"List the provider's group names (claim {settings.OIDC_GROUPS_CLAIM!r}) that grant "
                "each role.",
                id="together_dash.W011",
            )
        )
    if not settings.PASSWORD_LOGIN and not settings.OIDC_ENABLED:
        messages.append(
            Error(
                "PASSWORD_LOGIN is false and single sign-on is not configured: nobody can sign in.",
                hint="Configure OIDC_ISSUER, OIDC_CLIENT_ID and OIDC_CLIENT_SECRET, or set "
                "PASSWORD_LOGIN=true.",
                id="together_dash.E011",
            )
        )
    return messages
