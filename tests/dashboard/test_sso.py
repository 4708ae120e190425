"""Single sign-on through the real callback against a provider on loopback that hands out test-made ID tokens.

Each test goes /oidc/authenticate/ -> (provider) -> /oidc/callback/?code&state, so the dashboard itself
fetches discovery, the token, the keys and the userinfo over HTTP, and checks what it gets.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from django.contrib.auth.models import Group, User
from django.test import Client
from django.urls import reverse

from together_dash.core.roles import KEY_ADMIN_GROUP, VIEWER_GROUP, is_key_admin, is_viewer
from together_dash.dashboard import sso
from together_dash.keys.models import AuditLog

from .conftest import PASSWORD, make_user
from .oidc import TokenForge, configure, run_token_forge

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_discovery() -> Iterator[None]:
    sso.discovery.forget()
    yield
    sso.discovery.forget()


@pytest.fixture
def forge(settings: Any) -> Iterator[TokenForge]:
    with run_token_forge() as running:
        configure(settings, running.issuer, running.client_id, running.client_secret)
        running.userinfo = {"sub": "user-1", "email": "ana@example.com", "preferred_username": "ana",
                            "groups": ["ops"]}
        yield running


def start(client: Client) -> dict[str, str]:
    """Begin a sign-in; return the authorization request's parameters (state, nonce, ...)."""
    response = client.get(reverse("oidc_authentication_init"))
    assert response.status_code == 302
    return {name: values[0] for name, values in parse_qs(urlsplit(response["Location"]).query).items()}


def finish(client: Client, forge: TokenForge, id_token: str, state: str) -> Any:
    forge.id_token = id_token
    code = secrets.token_urlsafe(8)
    return client.get(reverse("oidc_authentication_callback"), {"code": code, "state": state})


def sign_in(client: Client, forge: TokenForge, **changes: Any) -> Any:
    request = start(client)
    return finish(client, forge, forge.sign(forge.claims(request["nonce"], **changes)), request["state"])


def signed_in_user(client: Client) -> User | None:
    user_id = client.session.get("_auth_user_id")
    return User.objects.get(pk=user_id) if user_id else None


def failures() -> list[str]:
    return list(AuditLog.objects.filter(action="sign_in", outcome="failure").values_list("detail", flat=True))


def test_the_authorization_request_carries_state_nonce_and_pkce(client: Client, forge: TokenForge) -> None:
    request = start(client)
    assert request["client_id"] == forge.client_id
    assert request["redirect_uri"] == "http://testserver/oidc/callback/"
    assert request["scope"] == "openid email profile"
    assert request["code_challenge_method"] == "S256"
    assert len(request["state"]) >= 32 and len(request["nonce"]) >= 32


def test_a_good_token_signs_in_a_viewer_and_lands_on_the_overview(client: Client, forge: TokenForge) -> None:
    response = sign_in(client, forge)
    assert response.status_code == 302 and response["Location"] == reverse("dashboard-landing")
    assert client.get(response["Location"])["Location"] == reverse("dashboard-overview")
    user = signed_in_user(client)
    assert user.username == "sso-user-1" and user.first_name == "ana" and user.email == "ana@example.com"
    assert is_viewer(user) and not is_key_admin(user) and not user.has_usable_password()
    # The code went back with the client's secret and the PKCE verifier.
    sent = forge.token_requests[-1]
    assert sent["client_secret"] == [forge.client_secret] and len(sent["code_verifier"][0]) >= 43
    rows = AuditLog.objects.filter(key_type="account", key_id=user.pk)
    assert {(row.action, row.outcome) for row in rows} == {("sign_in", "success"), ("role_change", "success")}
    assert rows.get(action="role_change").detail == "no role -> viewer (groups claim of Acme SSO)"
    assert rows.get(action="sign_in").detail == "single sign-on (Acme SSO)"


def test_a_key_admin_lands_on_the_keys_page(client: Client, forge: TokenForge) -> None:
    forge.userinfo["groups"] = ["platform-admins", "everyone"]
    response = sign_in(client, forge)
    assert client.get(response["Location"])["Location"] == reverse("keys-list")
    assert client.get(reverse("keys-list")).status_code == 200


def test_a_user_in_no_mapped_group_gets_the_no_role_page(client: Client, forge: TokenForge) -> None:
    forge.userinfo["groups"] = ["contractors"]
    response = client.get(sign_in(client, forge)["Location"])
    assert response.status_code == 403
    assert "No role on this dashboard" in response.content.decode()
    assert client.get(reverse("dashboard-overview")).status_code == 403


def test_roles_follow_the_groups_at_every_sign_in(client: Client, forge: TokenForge) -> None:
    forge.userinfo["groups"] = ["platform-admins"]
    sign_in(client, forge)
    assert is_key_admin(signed_in_user(client))
    client.logout()
    forge.userinfo["groups"] = ["ops"]
    sign_in(client, forge)
    user = signed_in_user(client)
    assert list(user.groups.values_list("name", flat=True)) == [VIEWER_GROUP] and not is_key_admin(user)
    assert AuditLog.objects.filter(action="role_change").first().detail == (
        f"{KEY_ADMIN_GROUP} -> {VIEWER_GROUP} (groups claim of Acme SSO)"
    )
    client.logout()
    forge.userinfo["groups"] = []
    sign_in(client, forge)
    assert not is_viewer(signed_in_user(client))


def test_the_groups_claim_name_is_a_setting(client: Client, forge: TokenForge, settings: Any) -> None:
    settings.OIDC_GROUPS_CLAIM = "roles"
    forge.userinfo = {"sub": "user-1", "roles": "platform-admins", "groups": ["ops"]}
    sign_in(client, forge)
    assert is_key_admin(signed_in_user(client))


def test_an_expired_token_is_refused(client: Client, forge: TokenForge) -> None:
    hour_ago = int(time.time()) - 3600
    response = sign_in(client, forge, iat=hour_ago - 300, exp=hour_ago)
    assert response["Location"] == "/accounts/login/?sso=failed"
    assert signed_in_user(client) is None and not User.objects.filter(username="sso-user-1").exists()
    assert failures() == ["single sign-on (Acme SSO): ID token refused: Signature has expired"]


def test_a_tampered_token_is_refused(client: Client, forge: TokenForge) -> None:
    request = start(client)
    header, _, signature = forge.sign(forge.claims(request["nonce"])).split(".")
    forged = forge.sign(forge.claims(request["nonce"], sub="someone-else")).split(".")[1]
    response = finish(client, forge, f"{header}.{forged}.{signature}", request["state"])
    assert response["Location"] == "/accounts/login/?sso=failed" and signed_in_user(client) is None
    assert failures() == ["single sign-on (Acme SSO): ID token refused: Signature verification failed"]


def test_a_token_signed_with_another_key_is_refused(client: Client, forge: TokenForge) -> None:
    request = start(client)
    stranger = rsa.generate_private_key(65537, 2048)
    finish(client, forge, forge.sign(forge.claims(request["nonce"]), key=stranger), request["state"])
    assert signed_in_user(client) is None
    assert failures() == ["single sign-on (Acme SSO): ID token refused: Signature verification failed"]


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"aud": "another-client"}, "Audience doesn't match"),
        ({"iss": "http://127.0.0.1:1"}, "Invalid issuer"),
        ({"exp": None}, 'Token is missing the "exp" claim'),
        ({"nonce": "replayed"}, "JWT Nonce verification failed."),
    ],
)
def test_a_token_for_someone_else_is_refused(
    client: Client, forge: TokenForge, changes: dict[str, Any], reason: str
) -> None:
    sign_in(client, forge, **changes)
    assert signed_in_user(client) is None
    assert failures() and failures()[0].endswith(reason)


def test_a_token_that_is_no_jwt_is_refused(client: Client, forge: TokenForge) -> None:
    request = start(client)
    finish(client, forge, "not-a-token", request["state"])
    assert signed_in_user(client) is None and len(failures()) == 1


def test_the_login_page_explains_a_failed_sign_in(client: Client, forge: TokenForge) -> None:
    page = client.get(sign_in(client, forge, exp=int(time.time()) - 3600)["Location"]).content.decode()
    assert "Sign-in with Acme SSO did not succeed" in page and "Sign in with Acme SSO" in page


def test_an_issuer_whose_discovery_names_another_issuer_is_unavailable(
    client: Client, forge: TokenForge, settings: Any
) -> None:
    settings.OIDC_ISSUER = f"{forge.issuer}/realms/other"
    response = client.get(reverse("oidc_authentication_init"))
    assert response["Location"] == "/accounts/login/?sso=unavailable"
    assert "Acme SSO cannot be reached right now" in client.get(response["Location"]).content.decode()


def test_an_unreachable_issuer_is_unavailable(client: Client, settings: Any) -> None:
    configure(settings, "http://127.0.0.1:9", "dash", secrets.token_urlsafe(16))
    assert client.get(reverse("oidc_authentication_init"))["Location"] == "/accounts/login/?sso=unavailable"


@pytest.mark.usefixtures("fast_passwords")
def test_password_login_and_open_sessions_do_not_depend_on_the_provider(
    client: Client, settings: Any, viewer: User
) -> None:
    configure(settings, "http://127.0.0.1:9", "dash", secrets.token_urlsafe(16))
    response = client.post(reverse("login"), {"username": viewer.username, "password": PASSWORD})
    assert response.status_code == 302 and client.get(reverse("dashboard-overview")).status_code == 200
    sso_user = User.objects.create_user("sso-user-9")
    sso_user.groups.add(Group.objects.get_or_create(name=VIEWER_GROUP)[0])
    other = Client()
    other.force_login(sso_user, backend="together_dash.dashboard.sso.SsoBackend")
    assert other.get(reverse("dashboard-overview")).status_code == 200


def test_no_secret_reaches_the_login_page_or_the_audit_log(client: Client, forge: TokenForge) -> None:
    sign_in(client, forge)
    client.logout()
    sign_in(client, forge, exp=int(time.time()) - 3600)
    page = client.get(reverse("login")).content.decode()
    logged = " ".join(AuditLog.objects.values_list("detail", flat=True))
    assert forge.client_secret not in page and forge.client_secret not in logged
    assert forge.id_token.split(".")[2] not in logged


def test_sso_urls_are_404_when_it_is_not_configured(client: Client) -> None:
    assert client.get(reverse("oidc_authentication_init")).status_code == 404
    assert client.get(reverse("oidc_authentication_callback"), {"code": "x", "state": "y"}).status_code == 404
    assert "Sign in with" not in client.get(reverse("login")).content.decode()


def test_a_local_account_named_like_an_sso_one_is_not_taken_over(client: Client, forge: TokenForge) -> None:
    local = make_user("ana", None)
    forge.userinfo["preferred_username"] = "ana"
    forge.userinfo["email"] = local.email = "ana@example.com"
    local.save()
    sign_in(client, forge)
    assert signed_in_user(client).username == "sso-user-1"
    assert User.objects.get(username="ana").check_password(PASSWORD)


@pytest.mark.usefixtures("fast_passwords")
class TestPasswordLogin:
    def test_a_password_sign_in_is_audited(self, client: Client, viewer: User) -> None:
        form = {"username": viewer.username, "password": PASSWORD}
        client.post(reverse("login"), form, REMOTE_ADDR="10.0.0.7")
        row = AuditLog.objects.get(action="sign_in")
        assert (row.outcome, row.username, row.detail, row.source_address) == (
            "success", viewer.username, "password", "10.0.0.7",
        )

    def test_a_wrong_password_is_audited_without_what_was_typed(self, client: Client, viewer: User) -> None:
        typed = secrets.token_urlsafe(12)
        client.post(reverse("login"), {"username": typed, "password": typed})
        row = AuditLog.objects.get(action="sign_in")
        assert (row.outcome, row.username, row.detail) == ("failure", "", "password: refused")
        assert typed not in row.key_label

    def test_password_login_false_refuses_the_post_and_offers_only_sso(
        self, client: Client, forge: TokenForge, settings: Any, viewer: User
    ) -> None:
        settings.PASSWORD_LOGIN = False
        settings.AUTHENTICATION_BACKENDS = ["together_dash.dashboard.sso.SsoBackend"]
        page = client.get(reverse("login")).content.decode()
        assert "Sign in with Acme SSO" in page and 'name="password"' not in page
        response = client.post(reverse("login"), {"username": viewer.username, "password": PASSWORD})
        assert response.status_code == 403 and "Password login is turned off" in response.content.decode()
        assert signed_in_user(client) is None
        # Nor through the admin's own login form.
        viewer.is_staff = True
        viewer.save()
        client.post("/admin/login/", {"username": viewer.username, "password": PASSWORD, "next": "/admin/"})
        assert signed_in_user(client) is None
        assert AuditLog.objects.get(action="sign_in", via="admin").outcome == "failure"
        # Single sign-on still works.
        sign_in(client, forge)
        assert signed_in_user(client).username == "sso-user-1"
