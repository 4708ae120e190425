from __future__ import annotations

import csv
import io
import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from together_dash.keys import audit, lifecycle
from together_dash.keys.audit import Actor
from together_dash.keys.models import AppKey, AuditLog, TogetherKey
from together_dash.traffic.csv_export import _cell as request_csv_cell

from .conftest import Together, new_secret

pytestmark = pytest.mark.django_db


@pytest.fixture
def upstream(together: Together, key_admin: User) -> tuple[TogetherKey, str]:
    secret = together.accepted_secret()
    return lifecycle.add_upstream_key("prod", secret, Actor(user=key_admin)), secret


@pytest.fixture
def app_key(upstream: tuple[TogetherKey, str], key_admin: User) -> AppKey:
    return lifecycle.create_app_key(
        "web", Actor(user=key_admin), upstream=upstream[0], allowed_models=["m1"]
    )[0]


def _action_posts(key: TogetherKey, app_key: AppKey) -> list[tuple[str, dict[str, str]]]:
    """Every action URL with a POST body that would succeed for a key admin."""
    return [
        (reverse("keys-upstream-add"), {"name": "other", "secret": new_secret()}),
        (reverse("keys-upstream-rotate", args=[key.pk]), {"secret": new_secret()}),
        (reverse("keys-upstream-rollback", args=[key.pk]), {}),
        (reverse("keys-upstream-revoke", args=[key.pk]), {"confirm": "on"}),
        (reverse("keys-app-create"), {"name": "another"}),
        (reverse("keys-app-rotate", args=[app_key.pk]), {}),
        (reverse("keys-app-revoke", args=[app_key.pk]), {"confirm": "on"}),
    ]


def _form_pages(key: TogetherKey, app_key: AppKey) -> list[str]:
    return [
        reverse("keys-upstream-new"),
        reverse("keys-app-new"),
        reverse("keys-upstream-revoke-confirm", args=[key.pk]),
        reverse("keys-app-revoke-confirm", args=[app_key.pk]),
    ]


def _state() -> list[tuple]:
    keys = list(TogetherKey.objects.values_list("pk", "status", "secret_encrypted"))
    apps = list(AppKey.objects.values_list("pk", "status", "secret_hash"))
    return keys + apps


# ---- anonymous ------------------------------------------------------------------------------------------


def test_anonymous_visitors_are_sent_to_the_login_page(client: Client, app_key: AppKey) -> None:
    pages = [
        reverse("keys-list"),
        reverse("keys-audit"),
        reverse("keys-audit-csv"),
        reverse("keys-upstream-new"),
        reverse("keys-upstream-detail", args=[app_key.upstream_key_id]),
        reverse("keys-app-detail", args=[app_key.pk]),
    ]
    for url in pages:
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/"), url
    before = _state()
    for url, data in _action_posts(app_key.upstream_key, app_key):
        response = client.post(url, data)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/"), url
    assert _state() == before


# ---- viewer ---------------------------------------------------------------------------------------------


def test_a_viewer_sees_keys_and_health_but_no_actions(viewer_web: Client, app_key: AppKey) -> None:
    key = app_key.upstream_key
    for url in (
        reverse("keys-list"),
        reverse("keys-upstream-detail", args=[key.pk]),
        reverse("keys-app-detail", args=[app_key.pk]),
    ):
        response = viewer_web.get(url)
        assert response.status_code == 200
        page = response.content.decode()
        assert "healthy" in page or "tdk_" in page
        body = page.split("</header>")[1]
        assert 'method="post"' not in body
        for action_url in [url for url, _ in _action_posts(key, app_key)] + _form_pages(key, app_key):
            assert f'"{action_url}' not in body, (url, action_url)
    listing = viewer_web.get(reverse("keys-list")).content.decode()
    assert f"…{key.last_four}" in listing and "healthy" in listing and f"tdk_{app_key.prefix}_…" in listing


def test_a_viewer_is_refused_every_action_and_the_attempt_is_audited(
    viewer_web: Client, app_key: AppKey
) -> None:
    before = _state()
    attempts = _action_posts(app_key.upstream_key, app_key)
    for url, data in attempts:
        assert viewer_web.post(url, data).status_code == 403, url
    assert _state() == before
    refused = AuditLog.objects.filter(outcome="failure", username="vic-viewer")
    assert refused.count() == len(attempts)
    for url in (
        reverse("keys-audit"),
        reverse("keys-audit-csv"),
        reverse("keys-upstream-new"),
        reverse("keys-app-new"),
        reverse("keys-upstream-revoke-confirm", args=[app_key.upstream_key_id]),
    ):
        assert viewer_web.get(url).status_code == 403, url


def test_a_user_without_a_role_sees_nothing(db: None, app_key: AppKey) -> None:
    client = Client()
    client.force_login(User.objects.create_user("nobody"))
    assert client.get(reverse("keys-list")).status_code == 403


# ---- key admin ------------------------------------------------------------------------------------------


def test_get_on_an_action_url_changes_nothing(admin_web: Client, app_key: AppKey) -> None:
    before = _state()
    for url, _ in _action_posts(app_key.upstream_key, app_key):
        assert admin_web.get(url).status_code == 405, url
    assert _state() == before


def test_a_key_admin_sees_the_actions(admin_web: Client, app_key: AppKey) -> None:
    listing = admin_web.get(reverse("keys-list")).content.decode()
    assert "Add a Together key" in listing and "Create an app key" in listing
    detail = admin_web.get(reverse("keys-upstream-detail", args=[app_key.upstream_key_id])).content.decode()
    assert reverse("keys-upstream-rotate", args=[app_key.upstream_key_id]) in detail
    assert "History" in detail and "create" in detail


def test_a_key_admin_adds_a_key_that_together_accepts(admin_web: Client, together: Together) -> None:
    secret = together.accepted_secret()
    response = admin_web.post(
        reverse("keys-upstream-add"), {"name": "staging", "secret": secret}, follow=True
    )
    key = TogetherKey.objects.get(name="staging")
    assert response.redirect_chain[-1][0] == reverse("keys-upstream-detail", args=[key.pk])
    assert key.secret == secret and secret not in response.content.decode()


def test_a_key_together_rejects_shows_the_error_and_stores_nothing(
    admin_web: Client, together: Together
) -> None:
    rejected = new_secret()
    response = admin_web.post(reverse("keys-upstream-add"), {"name": "staging", "secret": rejected})
    page = response.content.decode()
    assert response.status_code == 400 and "Together did not accept the key" in page
    assert rejected not in page and not TogetherKey.objects.exists()


def test_a_key_admin_rotates_with_a_grace_window(
    admin_web: Client, upstream: tuple[TogetherKey, str], together: Together
) -> None:
    key, old = upstream
    new = together.accepted_secret()
    url = reverse("keys-upstream-rotate", args=[key.pk])
    response = admin_web.post(url, {"secret": new, "grace_minutes": "15"}, follow=True)
    page = response.content.decode()
    key.refresh_from_db()
    assert key.secret == new and key.previous_secret == old
    assert f"…{old[-4:]}" in page and "kept until" in page and new not in page
    assert AuditLog.objects.filter(action="rotate", outcome="success", username="kim-admin").exists()


def test_a_failed_rotation_shows_the_error_and_keeps_the_key(
    admin_web: Client, upstream: tuple[TogetherKey, str]
) -> None:
    key, old = upstream
    rejected = new_secret()
    response = admin_web.post(reverse("keys-upstream-rotate", args=[key.pk]), {"secret": rejected})
    assert response.status_code == 400 and rejected not in response.content.decode()
    assert TogetherKey.objects.get().secret == old


def test_revoke_needs_the_confirmation_step(admin_web: Client, upstream: tuple[TogetherKey, str]) -> None:
    key, _ = upstream
    confirm = admin_web.get(reverse("keys-upstream-revoke-confirm", args=[key.pk]))
    assert (
        confirm.status_code == 200
        and reverse("keys-upstream-revoke", args=[key.pk]) in confirm.content.decode()
    )
    unconfirmed = admin_web.post(reverse("keys-upstream-revoke", args=[key.pk]), {})
    assert unconfirmed.status_code == 400 and TogetherKey.objects.get().is_active
    response = admin_web.post(reverse("keys-upstream-revoke", args=[key.pk]), {"confirm": "on"}, follow=True)
    assert TogetherKey.objects.get().status == "revoked"
    page = response.content.decode()
    assert "https://api.together.ai/settings/api-keys" in page and "Verify and rotate" not in page


def test_a_created_app_key_is_shown_once_and_never_cached(
    admin_web: Client, upstream: tuple[TogetherKey, str]
) -> None:
    data = {
        "name": "mobile",
        "upstream": upstream[0].pk,
        "allowed_models": "m1, m2\nm3",
        "rate_limit_per_minute": "30",
    }
    response = admin_web.post(reverse("keys-app-create"), data)
    app_key = AppKey.objects.get(name="mobile")
    plaintext = re.search(r'class="once" type="text" readonly value="([^"]+)"', response.content.decode())[1]
    assert plaintext.startswith(f"tdk_{app_key.prefix}_") and app_key.matches(plaintext)
    assert "no-store" in response["Cache-Control"] and "Copy it now" in response.content.decode()
    assert app_key.allowed_models == ["m1", "m2", "m3"] and app_key.rate_limit_per_minute == 30
    for url in (reverse("keys-app-detail", args=[app_key.pk]), reverse("keys-list")):
        assert plaintext not in admin_web.get(url).content.decode()


def test_a_rotated_app_key_is_shown_once_and_the_old_one_lasts_the_grace_window(
    admin_web: Client, app_key: AppKey
) -> None:
    response = admin_web.post(reverse("keys-app-rotate", args=[app_key.pk]), {"grace_minutes": "5"})
    assert response.status_code == 200 and "no-store" in response["Cache-Control"]
    app_key.refresh_from_db()
    assert app_key.previous_valid_until is not None and "keeps working until" in response.content.decode()


def test_an_app_key_is_revoked_after_confirmation(admin_web: Client, app_key: AppKey) -> None:
    assert admin_web.get(reverse("keys-app-revoke-confirm", args=[app_key.pk])).status_code == 200
    admin_web.post(reverse("keys-app-revoke", args=[app_key.pk]), {"confirm": "on"})
    assert AppKey.objects.get().status == "revoked"


# ---- CSRF -----------------------------------------------------------------------------------------------


def test_actions_need_a_csrf_token(key_admin: User, app_key: AppKey) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(key_admin)
    before = _state()
    for url, data in _action_posts(app_key.upstream_key, app_key):
        assert client.post(url, data).status_code == 403, url
    assert _state() == before
    client.get(reverse("keys-app-revoke-confirm", args=[app_key.pk]))
    token = client.cookies["csrftoken"].value
    client.post(
        reverse("keys-app-revoke", args=[app_key.pk]), {"confirm": "on", "csrfmiddlewaretoken": token}
    )
    assert AppKey.objects.get().status == "revoked"


# ---- audit log ------------------------------------------------------------------------------------------


def test_the_audit_log_filters_and_exports_csv(
    admin_web: Client, upstream: tuple[TogetherKey, str], key_admin: User
) -> None:
    key, _ = upstream
    lifecycle.revoke_upstream_key(key, Actor(user=key_admin, source_address="198.51.100.4"))
    with pytest.raises(lifecycle.KeyActionError):
        lifecycle.revoke_upstream_key(key, Actor(user=key_admin))
    page = admin_web.get(reverse("keys-audit"), {"action": "revoke", "outcome": "failure"}).content.decode()
    assert "already revoked" in page and "also revoke it at" not in page
    export = admin_web.get(reverse("keys-audit-csv"), {"action": "revoke"})
    assert export["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(b"".join(export.streaming_content).decode())))
    assert [(row["outcome"], row["user"]) for row in rows] == [
        ("failure", "kim-admin"),
        ("success", "kim-admin"),
    ]
    assert rows[1]["source_address"] == "198.51.100.4" and rows[1]["key_id"] == str(key.pk)


def test_the_audit_log_records_the_source_address_of_web_actions(admin_web: Client, app_key: AppKey) -> None:
    admin_web.post(reverse("keys-app-rotate", args=[app_key.pk]), REMOTE_ADDR="203.0.113.9")
    entry = AuditLog.objects.get(action="rotate")
    assert (entry.source_address, entry.via, entry.username) == ("203.0.113.9", "web", "kim-admin")


def test_csv_cells_that_a_spreadsheet_would_run_are_defused(admin_web: Client, key_admin: User) -> None:
    lifecycle.create_app_key("=HYPERLINK(1)", Actor(user=key_admin), expires_at=None)
    body = b"".join(admin_web.get(reverse("keys-audit-csv")).streaming_content).decode()
    assert "'=HYPERLINK" in body and ",=HYPERLINK" not in body


@pytest.mark.parametrize("lead", ["=", "+", "-", "@", "\t", "\r"])
def test_the_audit_csv_defuses_every_formula_start_as_the_request_csv_does(lead: str) -> None:
    entry = AuditLog(action="create", outcome="success", key_type="app", key_label="k", username="u",
                     via="system", detail=f"{lead}HYPERLINK(1)")
    line = list(audit.csv_lines([entry]))[1]
    assert next(csv.reader(io.StringIO(line, newline="")))[-1] == f"'{lead}HYPERLINK(1)"
    assert request_csv_cell(f"{lead}HYPERLINK(1)") == f"'{lead}HYPERLINK(1)"


def test_a_key_in_its_grace_window_shows_when_the_old_secret_goes(
    admin_web: Client,
    viewer_web: Client,
    upstream: tuple[TogetherKey, str],
    together: Together,
    key_admin: User,
) -> None:
    key, old = upstream
    lifecycle.rotate_upstream_key(
        key, together.accepted_secret(), Actor(user=key_admin), grace=timedelta(hours=1)
    )
    page = viewer_web.get(reverse("keys-list")).content.decode()
    assert f"…{old[-4:]} kept until" in page
