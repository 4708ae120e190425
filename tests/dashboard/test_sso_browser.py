"""Signing in with single sign-on in Debian's Chromium, through oidc-provider (npm) running on loopback."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import Browser, BrowserContext, Page

from together_dash.core.roles import is_key_admin
from together_dash.dashboard import sso
from together_dash.keys.models import AuditLog

from .oidc import NodeProvider, configure, run_oidc_provider
from .test_browser import browser, live_url, shoot  # noqa: F401  (the Chromium and live server fixtures)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

USERS = {
    "vera": {"groups": ["ops"], "email": "vera@example.com"},
    "kai": {"groups": ["platform-admins", "ops"], "email": "kai@example.com"},
    "nils": {"groups": ["contractors"], "email": "nils@example.com"},
}


@pytest.fixture(scope="module")
def provider(live_url: str) -> Iterator[NodeProvider]:  # noqa: F811
    with run_oidc_provider(f"{live_url}/oidc/callback/", USERS) as running:
        yield running


@pytest.fixture(autouse=True)
def _sso(settings: Any, provider: NodeProvider) -> Iterator[None]:
    configure(settings, provider.issuer, provider.client_id, provider.client_secret)
    provider.set_users(USERS)
    sso.discovery.forget()
    yield
    sso.discovery.forget()


@pytest.fixture
def new_page(browser: Browser, live_url: str) -> Iterator[Any]:  # noqa: F811
    contexts: list[BrowserContext] = []

    def open_page() -> Page:
        context = browser.new_context(base_url=live_url)
        contexts.append(context)
        return context.new_page()

    yield open_page
    for context in contexts:
        context.close()


def sign_in(page: Page, login: str) -> int:
    """From the login page through the provider's screens; the status of the page landed on."""
    statuses: dict[str, int] = {}
    page.on("response", lambda response: statuses.__setitem__(response.url.split("?")[0], response.status))
    page.goto("/accounts/login/")
    page.get_by_role("link", name="Sign in with Acme SSO").click()
    page.locator("input[name=login]").fill(login)
    page.locator("input[name=password]").fill(secrets.token_urlsafe(12))
    page.get_by_role("button", name="Sign-in").click()
    page.get_by_role("button", name="Continue").click()
    page.wait_for_url(lambda url: "/oidc/" not in url and "/interaction/" not in url and "/auth" not in url)
    page.wait_for_load_state()
    return statuses[page.url.split("?")[0]]


def test_a_viewer_lands_on_the_overview(new_page: Any, live_url: str) -> None:  # noqa: F811
    page = new_page()
    assert sign_in(page, "vera") == 200
    assert page.url == f"{live_url}/"
    assert page.locator(".who").inner_text() == "sso-vera"
    shoot(page, "sso-viewer-overview")
    user = User.objects.get(username="sso-vera")
    assert user.email == "vera@example.com"
    assert AuditLog.objects.filter(action="sign_in", outcome="success", user=user).count() == 1


def test_a_key_admin_lands_on_the_keys_page(new_page: Any, live_url: str) -> None:  # noqa: F811
    page = new_page()
    assert sign_in(page, "kai") == 200
    assert page.url == f"{live_url}/keys/"
    assert page.get_by_role("heading", name="Keys", exact=True).is_visible()


def test_a_user_without_a_role_gets_the_no_role_page(new_page: Any) -> None:
    page = new_page()
    assert sign_in(page, "nils") == 403
    assert page.get_by_role("heading", name="No role on this dashboard").is_visible()
    assert "ask an administrator to add you to a dashboard group" in page.inner_text("main")
    shoot(page, "sso-no-role")
    assert page.goto("/").status == 403


def test_a_group_removed_at_the_provider_removes_the_role(
    new_page: Any, provider: NodeProvider, live_url: str  # noqa: F811
) -> None:
    assert sign_in(new_page(), "kai") == 200
    assert is_key_admin(User.objects.get(username="sso-kai"))
    provider.set_users({**USERS, "kai": {"groups": ["ops"], "email": "kai@example.com"}})
    page = new_page()
    assert sign_in(page, "kai") == 200
    assert page.url == f"{live_url}/"
    assert not is_key_admin(User.objects.get(username="sso-kai"))
    assert page.goto("/keys/upstream/new/").status == 403
    change = AuditLog.objects.filter(action="role_change").first()
    assert change.detail == "key_admin, viewer -> viewer (groups claim of Acme SSO)"


def test_without_password_login_the_page_offers_only_sso(new_page: Any, settings: Any) -> None:
    settings.PASSWORD_LOGIN = False
    settings.AUTHENTICATION_BACKENDS = ["together_dash.dashboard.sso.SsoBackend"]
    page = new_page()
    page.goto("/accounts/login/")
    assert page.get_by_role("link", name="Sign in with Acme SSO").is_visible()
    assert page.locator("input[name=password]").count() == 0
    shoot(page, "sso-login-only")
    assert sign_in(page, "vera") == 200
