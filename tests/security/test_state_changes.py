"""Every URL that accepts POST, found by POSTing to every route of the URLconf, and held to its rule:
GET changes nothing, POST needs the CSRF token, the wrong role gets 403, the right one succeeds.

A new POST route without an entry in ACTIONS fails test_every_post_route_has_an_access_rule.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.contrib.sessions.models import Session
from django.core import serializers
from django.core.files.uploadedfile import SimpleUploadedFile
from django.http import HttpResponse
from django.test import Client
from django.urls import reverse

from together_dash.alerts.models import AlertRule, Mute
from together_dash.billing.models import CreditBalance
from together_dash.budgets.models import Budget
from together_dash.datasets.models import DatasetValidation
from together_dash.keys import lifecycle
from together_dash.keys.audit import Actor
from together_dash.keys.models import ApiToken, AppKey, TogetherKey
from together_dash.simulator.testing import RunningSimulator
from together_dash.traffic.models import RequestLog

from .urlconf import crawl

pytestmark = pytest.mark.django_db

KEY_ADMIN, VIEWER, PUBLIC, APP_KEY = "key_admin", "viewer", "public", "app_key"
ROLES = (KEY_ADMIN, VIEWER)  # the dashboard's roles; PUBLIC and APP_KEY have no "below"
LLAMA = "meta-llama/Llama-3.3-70B-Instruct-Turbo"
RECORD = {"endpoint": "/v1/chat/completions", "model": LLAMA, "status": 200}


@dataclass
class World:
    """The rows the actions act on, and a user in each role."""

    upstream: TogetherKey
    app_key: AppKey
    app_secret: str
    rule: AlertRule
    users: dict[str, User]


@dataclass(frozen=True)
class Request:
    path: str
    data: dict[str, Any] = field(default_factory=dict)
    json: bool = False  # a JSON body (the API) instead of a form


@dataclass(frozen=True)
class Action:
    role: str  # who may do it
    changes_state: bool  # whether doing it stores something (else: it only answers)
    valid: Callable[[World], Request]  # a request the role holder makes that succeeds
    ok: tuple[int, ...] = (302,)


def _upload(world: World) -> Request:
    dataset = SimpleUploadedFile("train.jsonl", b'{"text": "hello"}\n', content_type="application/jsonl")
    return Request(reverse("datasets-list"), {"file": dataset, "purpose": "fine-tune"})


BUDGET = {"name": "web-monthly", "scope": "model", "model": LLAMA, "period": "month", "amount_usd": "25",
          "thresholds": "80, 100"}


def _budget(world: World) -> Budget:
    return Budget.objects.get_or_create(
        name="existing", defaults={"scope": "app_key", "app_key": world.app_key, "amount_usd": "5"}
    )[0]


def _unmute(world: World) -> Request:
    Mute.objects.get_or_create(user=world.users[VIEWER], rule=world.rule)
    return Request(reverse("alerts-unmute", args=[world.rule.pk]))


ACTIONS: dict[str, Action] = {
    "keys/upstream/add": Action(
        KEY_ADMIN, True, lambda w: Request(reverse("keys-upstream-add"), {"name": "two", "secret": _secret()})
    ),
    "keys/upstream/<int:key_id>/rotate": Action(
        KEY_ADMIN, True,
        lambda w: Request(reverse("keys-upstream-rotate", args=[w.upstream.pk]), {"secret": _secret()}),
    ),
    "keys/upstream/<int:key_id>/rollback": Action(
        KEY_ADMIN, True, lambda w: Request(reverse("keys-upstream-rollback", args=[w.upstream.pk]))
    ),
    "keys/upstream/<int:key_id>/revoke": Action(
        KEY_ADMIN, True,
        lambda w: Request(reverse("keys-upstream-revoke", args=[w.upstream.pk]), {"confirm": "on"}),
    ),
    "keys/app/create": Action(
        KEY_ADMIN, True,
        lambda w: Request(reverse("keys-app-create"), {"name": "new-app", "upstream": w.upstream.pk}), (200,),
    ),
    "keys/app/<int:key_id>/rotate": Action(
        KEY_ADMIN, True, lambda w: Request(reverse("keys-app-rotate", args=[w.app_key.pk])), (200,)
    ),
    "keys/app/<int:key_id>/revoke": Action(
        KEY_ADMIN, True, lambda w: Request(reverse("keys-app-revoke", args=[w.app_key.pk]), {"confirm": "on"})
    ),
    "dashboard/runway/balance": Action(
        KEY_ADMIN, True,
        lambda w: Request(
            reverse("dashboard-runway-balance"), {"balance_usd": "100", "as_of": "2026-03-10T08:30"}
        ),
    ),
    # The bundle calls Together and holds redacted account data: key admins only, and POST so no link
    # or prefetch triggers it.
    "diagnostics/debug-bundle/": Action(
        KEY_ADMIN, False, lambda w: Request(reverse("diagnostics-debug-bundle")), (200,)
    ),
    # Each user mutes a rule for themselves only.
    "alerts/rules/<int:rule_id>/mute": Action(
        VIEWER, True, lambda w: Request(reverse("alerts-mute", args=[w.rule.pk]))
    ),
    "alerts/rules/<int:rule_id>/unmute": Action(VIEWER, True, _unmute),
    "datasets/": Action(VIEWER, True, _upload),
    # Budgets change what the proxy lets through (an enforced one stops an app key): key admins only.
    "budgets/new/": Action(KEY_ADMIN, True, lambda w: Request(reverse("budgets-new"), BUDGET)),
    "budgets/<int:budget_id>/edit/": Action(
        KEY_ADMIN, True,
        lambda w: Request(reverse("budgets-edit", args=[_budget(w).pk]), {**BUDGET, "name": "renamed"}),
    ),
    "budgets/<int:budget_id>/delete": Action(
        KEY_ADMIN, True, lambda w: Request(reverse("budgets-delete", args=[_budget(w).pk]), {"confirm": "on"})
    ),
    # Preflight answers a question (POST for the size of a prompt); it stores nothing.
    "diagnostics/preflight/": Action(
        VIEWER, False,
        lambda w: Request(
            reverse("diagnostics-preflight"), {"model": LLAMA, "max_tokens": "5", "prompt": "hi"}
        ),
        (200,),
    ),
    "api/preflight": Action(
        VIEWER, False,
        lambda w: Request("/api/preflight", {"model": LLAMA, "max_tokens": 5, "prompt": "hi"}, json=True),
        (200,),
    ),
    # App keys authenticate in a header, never a cookie: a cross-site form cannot send one, so no CSRF.
    "api/ingest": Action(
        APP_KEY, True, lambda w: Request("/api/ingest", [{**RECORD, "id": "r1"}], json=True),
        (200,),
    ),
    "accounts/login/": Action(
        PUBLIC, True, lambda w: Request(reverse("login"), {"username": "pat", "password": PASSWORD})
    ),
    "accounts/logout/": Action(PUBLIC, True, lambda w: Request(reverse("logout"))),
}
PASSWORD = "correct horse battery staple"
# Routes that answer POST as they answer GET, storing nothing (django-ninja's own views).
POST_AS_GET = {
    "api/openapi.json": "the schema, for any method",
    "api/docs": "the Swagger UI page, for any method",
    "api/": "404 for any method",
}


def _secret() -> str:
    return secrets.token_urlsafe(30)


# ---- the world, users and clients -----------------------------------------------------------------------

@pytest.fixture
def world(
    fresh_simulator: RunningSimulator, settings: Any, viewer: User, key_admin: User, no_role: User
) -> World:
    settings.TOGETHER_BASE_URL = fresh_simulator.base_url  # accepts any key
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    upstream = TogetherKey.create("main", _secret())
    # Rotated with a grace window, so that "go back" has something to go back to.
    lifecycle.rotate_upstream_key(upstream, _secret(), Actor(), grace=timedelta(hours=1))
    upstream.refresh_from_db()
    app_key = AppKey(name="web", upstream_key=upstream)
    app_secret = app_key.issue()
    app_key.save()
    pat = User.objects.create_user("pat", password=PASSWORD)
    users = {VIEWER: viewer, KEY_ADMIN: key_admin, "none": no_role, PUBLIC: pat}
    return World(upstream, app_key, app_secret, AlertRule.objects.order_by("pk").first(), users)


def web(user: User | None) -> Client:
    """A browser-like client: enforces CSRF, and holds a CSRF cookie from a form page."""
    client = Client(enforce_csrf_checks=True)
    if user is not None:
        client.force_login(user)
    client.get(reverse("login"))
    assert "csrftoken" in client.cookies
    return client


def send(client: Client, request: Request, csrf: bool = True, **headers: str) -> HttpResponse:
    """POST the request, with the CSRF token from the client's cookie unless told not to."""
    token = client.cookies["csrftoken"].value if csrf else None
    if request.json:
        extra = {"HTTP_X_CSRFTOKEN": token} if token else {}
        return client.post(request.path, json.dumps(request.data), content_type="application/json",
                           **extra, **headers)
    data = {**request.data, **({"csrfmiddlewaretoken": token} if token else {})}
    return client.post(request.path, data, **headers)


def state() -> str:
    """Everything an action could change (the audit log aside: refusals are audited on purpose)."""
    models = [
        TogetherKey, AppKey, ApiToken, Mute, DatasetValidation, RequestLog, Session, User, CreditBalance,
        Budget,
    ]
    return "".join(serializers.serialize("json", model.objects.order_by("pk")) for model in models)


# ---- the tests ----------------------------------------------------------------------------------------

def test_every_post_route_has_an_access_rule(superuser: User, settings: Any) -> None:
    settings.TOGETHER_BASE_URL = "http://127.0.0.1:9/v1"  # the debug bundle's connectivity check fails fast
    client = Client()
    accepts_post = set()
    for route in crawl():
        if route.route.startswith("admin/"):
            continue  # Django's admin: see test_the_admin_refuses_posts_without_staff_or_token
        client.force_login(superuser)  # again each time: one of them is the logout
        if client.post(route.path).status_code != 405:
            accepts_post.add(route.route)

    assert accepts_post == {*ACTIONS, *POST_AS_GET}, "give every POST route an entry in ACTIONS"


@pytest.mark.parametrize("route", POST_AS_GET)
def test_the_routes_that_ignore_post_answer_it_as_a_get(world: World, route: str) -> None:
    path = "/" + route
    client = web(world.users[KEY_ADMIN])
    before = state()

    assert send(client, Request(path)).content == client.get(path).content
    assert state() == before


@pytest.mark.parametrize("route", ACTIONS)
def test_a_get_changes_nothing(world: World, route: str) -> None:
    request = ACTIONS[route].valid(world)
    client = web(world.users[KEY_ADMIN])
    before = state()

    response = client.get(request.path)

    assert response.status_code in (200, 405)  # the form page, or refused
    assert state() == before


@pytest.mark.parametrize("route", [route for route, action in ACTIONS.items() if action.role != APP_KEY])
def test_a_post_without_the_csrf_token_is_refused(world: World, route: str) -> None:
    action = ACTIONS[route]
    request = action.valid(world)
    client = web(None if action.role == PUBLIC else world.users[action.role])
    before = state()

    response = send(client, request, csrf=False)

    assert response.status_code == 403
    assert state() == before


@pytest.mark.parametrize("route", [route for route, act in ACTIONS.items() if act.role in ROLES])
def test_a_user_below_the_role_is_refused(world: World, route: str) -> None:
    action = ACTIONS[route]
    below = world.users[VIEWER if action.role == KEY_ADMIN else "none"]
    request = action.valid(world)
    client = web(below)
    before = state()

    response = send(client, request)

    assert response.status_code in ((401, 403) if request.json else (403,))
    assert state() == before


@pytest.mark.parametrize("route", ACTIONS)
def test_the_role_holder_with_the_token_succeeds(world: World, route: str) -> None:
    action = ACTIONS[route]
    request = action.valid(world)
    client = Client() if action.role == APP_KEY else web(world.users[action.role])
    before = state()

    app_key = {"HTTP_AUTHORIZATION": f"Bearer {world.app_secret}"} if action.role == APP_KEY else {}
    response = send(client, request, csrf=action.role != APP_KEY, **app_key)

    assert response.status_code in action.ok, response.content[:300]
    assert (state() != before) == action.changes_state


def test_the_ingest_api_does_not_take_a_session(world: World) -> None:
    # A logged-in browser has cookies only; without an app key in the header nothing is stored.
    request = ACTIONS["api/ingest"].valid(world)
    client = web(world.users[KEY_ADMIN])
    before = state()

    assert send(client, request).status_code == 401
    assert state() == before


def test_the_admin_refuses_posts_without_staff_or_token(superuser: User, viewer: User) -> None:
    # The admin adds add/change/delete routes per model; Django guards them all the same way, so one
    # model's add view stands for them: no token -> 403, no staff -> the admin login, staff -> done.
    url = reverse("admin:auth_group_add")
    data = {"name": "made-by-post"}

    assert send(web(superuser), Request(url, data), csrf=False).status_code == 403
    refused = send(web(viewer), Request(url, data))
    assert refused.status_code == 302 and refused["Location"].startswith(reverse("admin:login"))
    assert not Group.objects.filter(name="made-by-post").exists()
    assert send(web(superuser), Request(url, data)).status_code == 302
    assert Group.objects.filter(name="made-by-post").exists()
