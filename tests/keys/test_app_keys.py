"""Issuing app keys: keys/services.create_app_key and `manage.py create_app_key`."""
from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.utils import timezone

from together_dash.keys.lifecycle import KeyActionError
from together_dash.keys.models import AppKey, AuditLog, TogetherKey
from together_dash.keys.services import create_app_key

pytestmark = pytest.mark.django_db


@pytest.fixture
def upstream() -> TogetherKey:
    return TogetherKey.create(name="prod", secret="upstream-secret-prod-0001")


def run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("create_app_key", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_an_app_key_is_shown_once_and_stored_only_as_prefix_and_hash(upstream: TogetherKey) -> None:
    app_key, plaintext = create_app_key("search", upstream="prod")

    stored = AppKey.objects.get(pk=app_key.pk)
    assert plaintext.startswith(f"tdk_{stored.prefix}_")
    assert plaintext not in {stored.secret_hash, stored.previous_hash, stored.name}
    assert stored.matches(plaintext) and not stored.matches(plaintext + "x")
    assert stored.upstream_key == upstream


def test_limits_and_expiry_are_stored(upstream: TogetherKey) -> None:
    app_key, _ = create_app_key(
        "narrow", expires_in=timedelta(days=7), allowed_models=[" a/model ", "", "b/model"],
        rate_limit_per_minute=30,
    )

    assert app_key.allowed_models == ["a/model", "b/model"]
    assert app_key.rate_limit_per_minute == 30
    assert timezone.now() + timedelta(days=6) < app_key.expires_at <= timezone.now() + timedelta(days=7)


def test_issuing_a_key_is_audited_without_the_secret(upstream: TogetherKey) -> None:
    app_key, plaintext = create_app_key("audited")

    entry = AuditLog.objects.get(key_type=AuditLog.KeyType.APP, key_id=app_key.pk)
    assert (entry.action, entry.outcome, entry.via) == ("create", "success", "command")
    assert plaintext not in entry.detail and plaintext not in entry.key_label


def test_an_unknown_upstream_name_is_refused_naming_the_active_keys(upstream: TogetherKey) -> None:
    with pytest.raises(KeyActionError) as excinfo:
        create_app_key("x", upstream="staging")

    assert "'staging' does not exist" in str(excinfo.value)
    assert "prod" in str(excinfo.value)
    assert not AppKey.objects.exists()


def test_a_revoked_upstream_key_cannot_back_a_new_app_key(upstream: TogetherKey) -> None:
    TogetherKey.objects.filter(pk=upstream.pk).update(status=TogetherKey.Status.REVOKED)

    with pytest.raises(KeyActionError, match="is revoked"):
        create_app_key("x", upstream="prod")


def test_the_command_prints_the_key_alone_on_stdout(upstream: TogetherKey) -> None:
    out, err = run("billing-service", "--upstream", "prod", "--models", "m1,m2", "--rate-limit", "60",
                   "--expires-in-days", "30")

    plaintext = out.strip()
    app_key = AppKey.objects.get()
    assert app_key.matches(plaintext)
    assert "shown only this once" in err and plaintext not in err
    assert (app_key.name, app_key.allowed_models, app_key.rate_limit_per_minute) == (
        "billing-service", ["m1", "m2"], 60)
    assert app_key.expires_at is not None


def test_the_command_records_the_given_user_in_the_audit_log(upstream: TogetherKey) -> None:
    User.objects.create_user("ops", password="x-long-enough-pass")
    run("for-ops", "--user", "ops")

    assert AuditLog.objects.get(key_type=AuditLog.KeyType.APP).username == "ops"


def test_the_command_reports_a_bad_upstream_as_a_command_error(upstream: TogetherKey) -> None:
    with pytest.raises(CommandError, match="does not exist"):
        run("x", "--upstream", "nope")


def test_the_command_refuses_a_nonsense_expiry(upstream: TogetherKey) -> None:
    with pytest.raises(CommandError, match="at least 1"):
        run("x", "--expires-in-days", "0")
