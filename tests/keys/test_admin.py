from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse

from together_dash.keys import lifecycle
from together_dash.keys.audit import Actor
from together_dash.keys.cache import key_cache_version
from together_dash.keys.models import AppKey, AuditLog, TogetherKey

from .conftest import Together

pytestmark = pytest.mark.django_db


@pytest.fixture
def upstream(together: Together) -> tuple[TogetherKey, str]:
    secret = together.accepted_secret()
    return lifecycle.add_upstream_key("prod", secret, Actor()), secret


@pytest.fixture
def app_key(upstream: tuple[TogetherKey, str]) -> AppKey:
    return lifecycle.create_app_key("web", Actor(), upstream=upstream[0])[0]


@pytest.fixture
def staff_viewer(viewer: User) -> Client:
    """A staff account with the viewer role and every view permission of the keys app."""
    viewer.is_staff = True
    viewer.save()
    viewer.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="keys", codename__startswith="view")
    )
    client = Client()
    client.force_login(viewer)
    return client


def test_the_key_pages_show_no_secret_ciphertext_or_hash(
    admin_client: Client, upstream: tuple[TogetherKey, str], app_key: AppKey
) -> None:
    key, secret = upstream
    pages = [
        reverse("admin:keys_togetherkey_changelist"),
        reverse("admin:keys_togetherkey_change", args=[key.pk]),
        reverse("admin:keys_appkey_changelist"),
        reverse("admin:keys_appkey_change", args=[app_key.pk]),
    ]
    for url in pages:
        page = admin_client.get(url).content.decode()
        assert f"…{key.last_four}" in page or f"tdk_{app_key.prefix}_…" in page
        for hidden in (secret, key.secret_encrypted, key.fingerprint, app_key.secret_hash):
            assert hidden not in page, url


def test_nobody_adds_or_deletes_keys_in_the_admin(
    admin_client: Client, upstream: tuple[TogetherKey, str]
) -> None:
    assert admin_client.get(reverse("admin:keys_togetherkey_add")).status_code == 403
    assert (
        admin_client.get(reverse("admin:keys_togetherkey_delete", args=[upstream[0].pk])).status_code == 403
    )
    assert admin_client.get(reverse("admin:keys_appkey_add")).status_code == 403


def test_the_revoke_action_asks_for_confirmation_then_revokes(
    admin_client: Client, upstream: tuple[TogetherKey, str]
) -> None:
    url = reverse("admin:keys_togetherkey_changelist")
    selection = {"action": "revoke_keys", "_selected_action": [upstream[0].pk]}
    confirm = admin_client.post(url, selection)
    assert confirm.status_code == 200 and "Yes, revoke" in confirm.content.decode()
    assert TogetherKey.objects.get().is_active
    admin_client.post(url, {**selection, "confirm_revoke": "yes"})
    assert TogetherKey.objects.get().status == "revoked"
    assert AuditLog.objects.get(action="revoke").via == "admin"


def test_the_rotate_action_leads_to_the_verified_rotation_form(
    admin_client: Client, upstream: tuple[TogetherKey, str]
) -> None:
    url = reverse("admin:keys_togetherkey_changelist")
    response = admin_client.post(url, {"action": "rotate_key", "_selected_action": [upstream[0].pk]})
    assert response["Location"] == reverse("keys-upstream-detail", args=[upstream[0].pk]) + "#rotate"


def test_editing_an_app_key_is_audited_and_reaches_the_proxy_at_once(
    admin_client: Client, app_key: AppKey, django_capture_on_commit_callbacks
) -> None:
    version = key_cache_version()
    data = {
        "name": "web",
        "upstream_key": app_key.upstream_key_id,
        "allowed_models": '["m1"]',
        "rate_limit_per_minute": "10",
        "expires_at_0": "",
        "expires_at_1": "",
    }
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(reverse("admin:keys_appkey_change", args=[app_key.pk]), data)
    assert response.status_code == 302
    assert AppKey.objects.get().rate_limit_per_minute == 10
    entry = AuditLog.objects.get(action="update")
    assert "rate_limit_per_minute" in entry.detail and entry.via == "admin"
    assert key_cache_version() > version


def test_the_audit_log_is_read_only_filterable_and_exports_csv(
    admin_client: Client, upstream: tuple[TogetherKey, str]
) -> None:
    url = reverse("admin:keys_auditlog_changelist")
    page = admin_client.get(url, {"action__exact": "create", "outcome__exact": "success"})
    assert page.status_code == 200 and "prod" in page.content.decode()
    entry = AuditLog.objects.get()
    assert admin_client.get(reverse("admin:keys_auditlog_add")).status_code == 403
    assert admin_client.get(reverse("admin:keys_auditlog_delete", args=[entry.pk])).status_code == 403
    export = admin_client.post(url, {"action": "export_csv", "_selected_action": [entry.pk]})
    body = b"".join(export.streaming_content).decode()
    assert export["Content-Type"].startswith("text/csv") and "create,success,upstream" in body


def test_a_staff_viewer_sees_keys_but_neither_actions_nor_the_audit_log(
    staff_viewer: Client, upstream: tuple[TogetherKey, str]
) -> None:
    page = staff_viewer.get(reverse("admin:keys_togetherkey_changelist"))
    assert page.status_code == 200 and "revoke_keys" not in page.content.decode()
    assert staff_viewer.get(reverse("admin:keys_auditlog_changelist")).status_code == 403
    url = reverse("admin:keys_togetherkey_changelist")
    staff_viewer.post(
        url, {"action": "revoke_keys", "_selected_action": [upstream[0].pk], "confirm_revoke": "yes"}
    )
    assert TogetherKey.objects.get().is_active
