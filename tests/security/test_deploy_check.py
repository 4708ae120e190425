"""`manage.py check --deploy` is clean with the production settings README asks for, and fails loudly
when one of them is missing or weak: the production defaults live in settings.py, not in a runbook."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import manage, production_env

CHECK = ("check", "--deploy", "--fail-level", "WARNING")


def test_production_settings_pass_the_deploy_check_without_a_warning(tmp_path: Path) -> None:
    done = manage(production_env(tmp_path), *CHECK)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "System check identified no issues" in done.stdout
    assert "WARNING" not in done.stderr.upper() and "ERROR" not in done.stderr.upper()


@pytest.mark.parametrize(
    ("overrides", "check_id"),
    [
        ({"SECRET_KEY": None}, "together_dash.E001"),  # the throwaway key generated at import
        ({"SECRET_KEY": "django-insecure-" + "x" * 50}, "security.W009"),  # startproject's placeholder
        ({"SECRET_KEY": "short"}, "security.W009"),
        ({"FIELD_ENCRYPTION_KEYS": None}, "together_dash.E002"),
        ({"FIELD_ENCRYPTION_KEYS": "not-a-fernet-key"}, "together_dash.E003"),
        ({"DEBUG": "true"}, "security.W018"),
        ({"SECURE_SSL_REDIRECT": "false"}, "security.W008"),
        ({"SECURE_HSTS_SECONDS": "0"}, "security.W004"),
        ({"SECURE_HSTS_PRELOAD": "false"}, "security.W021"),
        ({"SESSION_COOKIE_SECURE": "false"}, "security.W012"),
        ({"CSRF_COOKIE_SECURE": "false"}, "security.W016"),
        ({"ALERT_EMAILS": None}, "together_dash.W002"),
        ({"EMAIL_URL": None}, "together_dash.W001"),
        ({"METRICS_TOKEN": None}, "together_dash.W003"),
    ],
)
def test_a_missing_or_weak_production_setting_fails_the_check(
    tmp_path: Path, overrides: dict[str, str | None], check_id: str
) -> None:
    done = manage(production_env(tmp_path, **overrides), *CHECK)

    assert done.returncode != 0
    assert f"({check_id})" in done.stderr, done.stderr


def test_the_development_defaults_still_pass_the_plain_check(tmp_path: Path) -> None:
    # `make run` runs with DEBUG on and no secret in the environment: only the deploy check complains.
    unset = dict.fromkeys(("DEBUG", "SECRET_KEY", "FIELD_ENCRYPTION_KEYS", "ALLOWED_HOSTS"))
    env = production_env(tmp_path, **unset)

    assert manage(env, "check", "--fail-level", "WARNING").returncode == 0


def test_a_secret_key_starting_with_a_dollar_is_taken_as_it_is(tmp_path: Path) -> None:
    # Django's own generator uses "$"; django-environ would read "$abc" as "the variable abc".
    done = manage(production_env(tmp_path, SECRET_KEY="$" + "k7#Vq2!xZ9&" * 5), *CHECK)

    assert done.returncode == 0, done.stderr
