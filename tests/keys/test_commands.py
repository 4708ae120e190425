from __future__ import annotations

import io
from datetime import timedelta

import pytest
import time_machine
from cryptography.fernet import Fernet
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings
from django.utils import timezone

from together_dash.keys import lifecycle
from together_dash.keys.audit import Actor
from together_dash.keys.models import AppKey, AuditLog, TogetherKey

from .conftest import Together, new_secret

pytestmark = pytest.mark.django_db


def run(*args: str, stdin: str | None = None, **options: object) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    if stdin is not None:
        options["stdin"] = io.StringIO(stdin)
    call_command(*args, stdout=out, stderr=err, **options)
    return out.getvalue(), err.getvalue()


@pytest.fixture
def upstream(together: Together) -> tuple[TogetherKey, str]:
    secret = together.accepted_secret()
    run("add_key", "prod", stdin=secret + "\n")
    return TogetherKey.objects.get(name="prod"), secret


def test_add_key_reads_the_secret_from_stdin_and_verifies_it(together: Together) -> None:
    secret = together.accepted_secret()
    out, _ = run("add_key", "prod", stdin=secret + "\n")
    key = TogetherKey.objects.get(name="prod")
    assert key.secret == secret and secret not in out and f"…{secret[-4:]}" in out
    entry = AuditLog.objects.get(action="create")
    assert (entry.via, entry.outcome, entry.username) == ("command", "success", "")


def test_add_key_reads_the_secret_from_an_environment_variable(together: Together, monkeypatch) -> None:
    secret = together.accepted_secret()
    monkeypatch.setenv("NEW_TOGETHER_KEY", secret)
    run("add_key", "prod", "--secret-env", "NEW_TOGETHER_KEY", stdin="")
    assert TogetherKey.objects.get().secret == secret


def test_add_key_records_the_user_it_acts_for(together: Together, key_admin: User) -> None:
    run("add_key", "prod", "--user", key_admin.username, stdin=together.accepted_secret())
    assert AuditLog.objects.get().username == key_admin.username


def test_add_key_takes_no_secret_on_the_command_line(together: Together) -> None:
    with pytest.raises(CommandError, match="No secret given"):
        run("add_key", "prod", stdin="")
    with pytest.raises(TypeError):
        run("add_key", "prod", secret=new_secret())


def test_add_key_fails_without_echoing_a_rejected_secret(together: Together) -> None:
    rejected = new_secret()
    with pytest.raises(CommandError) as excinfo:
        run("add_key", "prod", stdin=rejected)
    assert "HTTP 401" in str(excinfo.value) and rejected not in str(excinfo.value)
    assert not TogetherKey.objects.exists()


def test_rotate_key_switches_and_keeps_the_old_secret_for_the_grace_window(
    upstream: tuple[TogetherKey, str], together: Together
) -> None:
    key, old = upstream
    new = together.accepted_secret()
    out, _ = run("rotate_key", "prod", "--grace-minutes", "30", stdin=new)
    key.refresh_from_db()
    assert key.secret == new and key.previous_secret == old and "kept until" in out
    assert new not in out and old not in out


def test_rotate_key_refuses_a_secret_together_rejects(upstream: tuple[TogetherKey, str]) -> None:
    with pytest.raises(CommandError, match="Nothing was stored"):
        run("rotate_key", "prod", stdin=new_secret())
    assert TogetherKey.objects.get().secret == upstream[1]


def test_rotate_key_names_an_unknown_key(db: None) -> None:
    with pytest.raises(CommandError, match="No upstream key named 'nope'"):
        run("rotate_key", "nope", stdin=new_secret())


def test_revoke_key_revokes_and_points_at_together(upstream: tuple[TogetherKey, str]) -> None:
    out, _ = run("revoke_key", "prod")
    assert TogetherKey.objects.get().status == "revoked"
    assert "api.together.ai/settings/api-keys" in out
    with pytest.raises(CommandError, match="already revoked"):
        run("revoke_key", "prod")


def test_rotate_encryption_key_moves_every_row_to_the_newest_key(together: Together) -> None:
    old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    with override_settings(FIELD_ENCRYPTION_KEYS=[old_key]):
        secret = together.accepted_secret()
        run("add_key", "prod", stdin=secret)
    with override_settings(FIELD_ENCRYPTION_KEYS=[new_key, old_key]):
        out, _ = run("rotate_encryption_key")
    assert "Re-encrypted 1 row(s)" in out
    with override_settings(FIELD_ENCRYPTION_KEYS=[new_key]):
        assert TogetherKey.objects.get().secret == secret


def test_rotate_app_key_prints_only_the_new_key_and_revoke_app_key_ends_it(db: None) -> None:
    app_key, old = lifecycle.create_app_key("web", Actor())
    out, err = run("rotate_app_key", f"tdk_{app_key.prefix}", "--grace-minutes", "5")
    new = out.strip()
    stored = AppKey.objects.get()
    assert new.startswith(f"tdk_{app_key.prefix}_") and stored.matches(new) and stored.matches(old)
    assert "Copy the new key now" in err and new not in err
    run("revoke_app_key", app_key.prefix)
    assert not AppKey.objects.get().is_usable


def test_revoke_app_key_names_an_unknown_prefix(db: None) -> None:
    with pytest.raises(CommandError, match="No app key with prefix"):
        run("revoke_app_key", "tdk_00000000")


def test_expire_key_grace_destroys_old_secrets_after_their_window(
    upstream: tuple[TogetherKey, str], together: Together
) -> None:
    run("rotate_key", "prod", "--grace-minutes", "10", stdin=together.accepted_secret())
    assert "Destroyed 0" in run("expire_key_grace")[0]
    with time_machine.travel(timezone.now() + timedelta(minutes=11)):
        assert "Destroyed 1" in run("expire_key_grace")[0]
    assert TogetherKey.objects.get().previous_secret_encrypted == ""
