"""Helpers for the security suite: production settings in a subprocess, and users in each role."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from django.contrib.auth.models import Group, User
from django.core.management.utils import get_random_secret_key

from together_dash.core.roles import KEY_ADMIN_GROUP, VIEWER_GROUP

ROOT = Path(__file__).resolve().parents[2]
# Settings the production run must not inherit from whoever runs the tests.
SECURITY_VARIABLES = (
    "DEBUG", "SECRET_KEY", "FIELD_ENCRYPTION_KEYS", "ALLOWED_HOSTS", "EMAIL_URL", "ALERT_EMAILS",
    "SECURE_SSL_REDIRECT", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS", "SECURE_HSTS_PRELOAD", "BEHIND_TLS_PROXY", "CONTENT_SECURITY_POLICY",
    "METRICS_TOKEN",
)


def production_env(tmp_path: Path, **overrides: str | None) -> dict[str, str]:
    """What a production deploy sets (README: "In production set ..."), nothing more; None removes one."""
    env = {name: value for name, value in os.environ.items() if name not in SECURITY_VARIABLES}
    env.update(
        DEBUG="false",
        SECRET_KEY=get_random_secret_key(),
        FIELD_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        ALLOWED_HOSTS="dash.example.com",
        EMAIL_URL="smtp+tls://alerts:password@smtp.example.com:587",
        ALERT_EMAILS="billing@example.com",
        METRICS_TOKEN=get_random_secret_key(),
        TOGETHER_DASH_VAR_DIR=str(tmp_path),
        DJANGO_SETTINGS_MODULE="together_dash.settings",
    )
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def settings_under(env: dict[str, str], names: list[str]) -> dict[str, object]:
    """The values settings.py computes from that environment, read in a fresh interpreter."""
    code = (
        "import json, django; from django.conf import settings; django.setup(); "
        f"print(json.dumps({{name: getattr(settings, name) for name in {names!r}}}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def user_in(username: str, group: str | None, **fields: object) -> User:
    user = User.objects.create_user(username=username, **fields)  # tests log in with force_login
    if group:
        user.groups.add(Group.objects.get_or_create(name=group)[0])
    return user


@pytest.fixture
def viewer(db: None) -> User:
    return user_in("vic-viewer", VIEWER_GROUP)


@pytest.fixture
def key_admin(db: None) -> User:
    return user_in("kim-admin", KEY_ADMIN_GROUP)


@pytest.fixture
def no_role(db: None) -> User:
    return user_in("nora-norole", None)


@pytest.fixture
def superuser(db: None) -> User:
    return User.objects.create_superuser("root", "root@example.invalid", None)
