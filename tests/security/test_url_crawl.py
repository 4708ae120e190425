"""Every URL needs a login, except a short list of public ones, each with its reason.

The crawl walks the whole URLconf (urlconf.crawl), so a route added later is visited too: an unlisted
route fails test_every_route_is_classified until it is given its access rule below.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import httpx
import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.core.asgi import get_asgi_application
from django.http import HttpResponse
from django.test import Client
from django.urls import reverse

from together_dash.proxy.app import Proxy
from together_dash.proxy.dispatch import Dispatcher

from .urlconf import Route, crawl

PAGE = "page"  # anonymous: redirect to the login page; logged in without a role: 403
DATA = "data"  # a JSON/CSV endpoint for scripts: 401 or 403, never a login page
ADMIN = "admin"  # Django's admin: redirect to its login for anyone who is not staff
PUBLIC = "public"

# Public on purpose. Nothing here shows data about traffic, keys or users.
PUBLIC_ROUTES = {
    "accounts/login/": "the login form itself",
    "accounts/logout/": "POST only; logging out needs no login",
    "admin/login/": "the admin's login form (same throttle as accounts/login/)",
    "admin/logout/": "POST only, as accounts/logout/",
    "oidc/authenticate/": "starts single sign-on: a redirect to the identity provider (404 while it is off)",
    "oidc/callback/": "the identity provider's redirect back: signs in only with a valid code and ID token",
    "healthz": "load-balancer liveness probe: status words only",
    "api/openapi.json": "the API's schema (no data); clients and the fuzz tests read it without a session",
    "api/docs": "Swagger UI for the schema above",
    "api/": "django-ninja's root: 404 for every path it does not route",
    "^tools/datasets/(?P<rest>.*)$": "a redirect from the old address; the page it names checks the login",
    "^tools/preflight/$": "a redirect from the old address; the page it names checks the login",
}
DATA_ROUTES = (
    "dashboard/charts/categories.json",
    "dashboard/charts/volume.json",
    "dashboard/charts/quota.json",
    "dashboard/charts/finetunes.json",
    "api/ingest",  # app key (Bearer tdk_...)
    "api/requests",  # ops token or a session with a role, as the rest of api/
    "api/requests.csv",
    "api/errors",
    "api/usage",
    "api/preflight",
    "api/billing/runway",
    "api/billing/reconciliation",
    "metrics",  # METRICS_TOKEN (Bearer), compared in constant time; 404 while it is unset
)
PAGE_ROUTES = (
    "",
    "accounts/landing/",  # where a sign-in lands; without a role, the no-role page (403)
    "errors/",
    "errors/<int:group_id>/",
    "requests/",
    "requests/<int:log_id>/",
    "models/",
    "fine-tunes/",
    "fine-tunes/<str:job_id>/",
    "batches/",
    "batches/<str:batch_id>/remainder.jsonl",
    "endpoints/",
    "endpoints/<str:endpoint_id>/",
    "dashboard/keys/",
    "dashboard/keys/<int:key_id>/",
    "dashboard/runway/",
    "dashboard/runway/balance",
    "billing/",
    "keys/",
    "keys/audit/",
    "keys/audit.csv",
    "keys/upstream/new/",
    "keys/upstream/add",
    "keys/upstream/<int:key_id>/",
    "keys/upstream/<int:key_id>/rotate",
    "keys/upstream/<int:key_id>/rollback",
    "keys/upstream/<int:key_id>/revoke/confirm/",
    "keys/upstream/<int:key_id>/revoke",
    "keys/app/new/",
    "keys/app/create",
    "keys/app/<int:key_id>/",
    "keys/app/<int:key_id>/rotate",
    "keys/app/<int:key_id>/revoke/confirm/",
    "keys/app/<int:key_id>/revoke",
    "datasets/",
    "datasets/<int:validation_id>/",
    "datasets/<int:validation_id>/progress.json",  # polled by the page itself: a login redirect is fine
    "diagnostics/preflight/",
    "diagnostics/debug-bundle/",
    "alerts/",
    "alerts/<int:alert_id>/",
    "alerts/rules/<int:rule_id>/mute",
    "alerts/rules/<int:rule_id>/unmute",
    "budgets/",
    "budgets/new/",
    "budgets/<int:budget_id>/edit/",
    "budgets/<int:budget_id>/delete",
)


@pytest.fixture(autouse=True)
def _metrics_on(settings: object) -> None:
    """/metrics is a 404 for everyone until METRICS_TOKEN is set; set, it must refuse like any data route."""
    settings.METRICS_TOKEN = "crawl-metrics-token-0123456789"


def access_rule(route: Route) -> str | None:
    """The rule a route is listed under, or None while nobody has classified it."""
    if route.route in PUBLIC_ROUTES:
        return PUBLIC
    if route.route in DATA_ROUTES:
        return DATA
    if route.route in PAGE_ROUTES:
        return PAGE
    # Every ModelAdmin adds routes here; Django's admin_view wraps them all in its staff check.
    if route.route.startswith("admin/") and (route.name or "admin:").startswith("admin:"):
        return ADMIN
    return None


def test_every_route_is_classified() -> None:
    found = crawl()
    unclassified = [route.route for route in found if access_rule(route) is None]
    listed = {*PUBLIC_ROUTES, *DATA_ROUTES, *PAGE_ROUTES}
    stale = listed - {route.route for route in found}

    assert unclassified == [], "new routes: list each under PAGE_ROUTES, DATA_ROUTES or PUBLIC_ROUTES"
    assert stale == set(), "listed routes that no longer exist"
    assert len(found) > 100  # the admin's routes are in the crawl too


def request_as(client: Client, path: str) -> HttpResponse:
    """GET, or POST when the route refuses GET with 405 (actions): whichever reaches the access check."""
    response = client.get(path)
    if response.status_code == 405:
        response = client.post(path)
    return response


def refusal_problem(rule: str, response: HttpResponse, login_url: str) -> str | None:
    status = response.status_code
    if rule == PAGE or rule == ADMIN:
        target = urlsplit(response.get("Location", "")).path
        return None if status == 302 and target == login_url else f"{status} -> {target or '-'}"
    return None if status in (401, 403) else f"{status}"


@pytest.mark.django_db
def test_anonymous_visitors_are_refused_everywhere_but_the_public_routes() -> None:
    client = Client()
    login = {PAGE: reverse(settings.LOGIN_URL), ADMIN: reverse("admin:login"), DATA: ""}
    problems = {}
    for route in crawl():
        rule = access_rule(route)
        if rule == PUBLIC:
            continue
        problem = refusal_problem(rule, request_as(client, route.path), login[rule])
        if problem:
            problems[route.path] = problem

    assert problems == {}


@pytest.mark.django_db
def test_a_login_without_a_dashboard_role_reads_nothing(no_role: User) -> None:
    client = Client()
    client.force_login(no_role)
    problems = {}
    for route in crawl():
        rule = access_rule(route)
        if rule in (PUBLIC, ADMIN) or route.route == "api/ingest":  # ingest takes app keys, not logins
            continue
        status = request_as(client, route.path).status_code
        if status not in ((401, 403) if rule == DATA else (403,)):
            problems[route.path] = status

    assert problems == {}


@pytest.mark.django_db
def test_the_public_routes_answer_without_a_login() -> None:
    client = Client()
    statuses = {path: client.get(path).status_code for path in ("/accounts/login/", "/admin/login/",
                                                                 "/healthz", "/api/openapi.json",
                                                                 "/api/docs")}

    assert statuses == dict.fromkeys(statuses, 200)
    assert client.get("/accounts/logout/").status_code == 405  # logging out is a POST


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/models"), ("POST", "/v1/chat/completions"), ("POST", "/v1/embeddings"), ("GET", "/v1")],
)
def test_the_proxy_wants_a_key_and_answers_in_togethers_error_shape(method: str, path: str) -> None:
    # /v1 is routed before Django (asgi.py), so it is not in the URLconf: the real dispatcher is used here.
    async def call() -> httpx.Response:
        proxy = Proxy()
        app = Dispatcher(get_asgi_application(), proxy)
        try:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as web:
                return await web.request(method, path, json={"model": "m"} if method == "POST" else None)
        finally:
            await proxy.stop()

    response = asyncio.run(call())

    assert response.status_code == 401
    error = response.json()["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert {"message", "type"} <= error.keys()
