from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from together_dash.settings import env_bool, env_decimal

ROOT = Path(__file__).resolve().parents[2]
BOOLEAN_SETTINGS = (
    "DEBUG", "DEMO_MODE", "PROXY_PASSTHROUGH", "CELERY_TASK_ALWAYS_EAGER", "BEHIND_TLS_PROXY",
    "SECURE_SSL_REDIRECT", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "SECURE_HSTS_PRELOAD", "PASSWORD_LOGIN",
)
ACCEPTED = "true/false/1/0/yes/no/on/off"


def _run(tmp_path: Path, args: list[str], **variables: str) -> subprocess.CompletedProcess[str]:
    env = {name: value for name, value in os.environ.items() if name not in BOOLEAN_SETTINGS}
    env.update(TOGETHER_DASH_VAR_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="together_dash.settings")
    env.update(variables)
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_a_misspelt_debug_stops_manage_py(tmp_path: Path) -> None:
    done = _run(tmp_path, ["manage.py", "check"], DEBUG="ture")
    assert done.returncode != 0
    assert f"DEBUG='ture' is not a boolean: use one of {ACCEPTED} (any case)." in done.stderr


@pytest.mark.parametrize("name", ["SESSION_COOKIE_SECURE", "DEMO_MODE"])
def test_a_misspelt_boolean_stops_the_settings_import(tmp_path: Path, name: str) -> None:
    done = _run(tmp_path, ["-c", "import together_dash.settings"], **{name: "treu"})
    assert done.returncode != 0
    assert f"{name}='treu' is not a boolean: use one of {ACCEPTED} (any case)." in done.stderr


def test_good_values_reach_the_settings(tmp_path: Path) -> None:
    code = (
        "import json, django; from django.conf import settings; django.setup(); "
        f"print(json.dumps({{name: getattr(settings, name) for name in {list(BOOLEAN_SETTINGS)!r}}}))"
    )
    done = _run(
        tmp_path, ["-c", code], DEBUG="Off", DEMO_MODE="YES", PROXY_PASSTHROUGH="1",
        SESSION_COOKIE_SECURE="on", SECURE_HSTS_PRELOAD="False",
    )
    assert done.returncode == 0, done.stderr
    values = json.loads(done.stdout.strip().splitlines()[-1])
    assert values["DEBUG"] is False
    assert values["DEMO_MODE"] is True
    assert values["PROXY_PASSTHROUGH"] is True
    assert values["SESSION_COOKIE_SECURE"] is True
    assert values["SECURE_HSTS_PRELOAD"] is False
    assert values["CELERY_TASK_ALWAYS_EAGER"] is False  # unset: its default
    assert values["CSRF_COOKIE_SECURE"] is True  # unset: its default with DEBUG off


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("true", True), ("TRUE", True), ("1", True), ("yes", True), ("Yes", True), ("on", True),
        (" On ", True),
        ("false", False), ("False", False), ("0", False), ("no", False), ("NO", False), ("off", False),
    ],
)
def test_it_reads_every_accepted_spelling(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: bool
) -> None:
    monkeypatch.setenv("SOME_FLAG", value)
    assert env_bool("SOME_FLAG", default=not expected) is expected


def test_an_unset_variable_takes_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOME_FLAG", raising=False)
    assert env_bool("SOME_FLAG", default=True) is True
    assert env_bool("SOME_FLAG", default=False) is False


@pytest.mark.parametrize("value", ["ture", "treu", "", "y", "ok", "2", "enabled"])
def test_it_refuses_anything_else(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("SOME_FLAG", value)
    with pytest.raises(ImproperlyConfigured, match=f"^SOME_FLAG={value!r} is not a boolean"):
        env_bool("SOME_FLAG", default=False)


@pytest.mark.parametrize("value", ["0.5%", "1,5", "lots", "-1", "NaN", "Infinity"])
def test_a_tolerance_that_is_no_plain_decimal_stops_the_settings_import(tmp_path: Path, value: str) -> None:
    done = _run(tmp_path, ["-c", "import together_dash.settings"], BILLING_RECONCILE_TOLERANCE_PERCENT=value)
    assert done.returncode != 0
    assert f"BILLING_RECONCILE_TOLERANCE_PERCENT={value!r}" in done.stderr


def test_a_tolerance_reaches_the_settings_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOME_TOLERANCE", " 0.25 ")
    assert env_decimal("SOME_TOLERANCE", "1") == Decimal("0.25")
    monkeypatch.delenv("SOME_TOLERANCE")
    assert env_decimal("SOME_TOLERANCE", "1") == Decimal(1)


def _backends(tmp_path: Path, **variables: str) -> list[str]:
    code = "import json; from django.conf import settings as s; print(json.dumps(s.AUTHENTICATION_BACKENDS))"
    done = _run(tmp_path, ["-c", code], **variables)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_single_sign_on_and_password_login_pick_the_backends(tmp_path: Path) -> None:
    oidc = {"OIDC_ISSUER": "https://sso.example.com/realms/acme/", "OIDC_CLIENT_ID": "dash",
            "OIDC_CLIENT_SECRET": "generated-" + os.urandom(8).hex()}
    password, sso = "django.contrib.auth.backends.ModelBackend", "together_dash.dashboard.sso.SsoBackend"
    assert _backends(tmp_path) == [password]
    assert _backends(tmp_path, OIDC_ISSUER=oidc["OIDC_ISSUER"]) == [password]
    assert _backends(tmp_path, **oidc) == [password, sso]
    assert _backends(tmp_path, PASSWORD_LOGIN="false", **oidc) == [sso]
