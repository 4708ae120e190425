"""Security headers on every kind of response, pages a strict Content-Security-Policy can serve, and
in production HSTS, the HTTPS redirect and Secure cookies; in development plain http still works."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.http import HttpResponse
from django.test import Client

from together_dash.core.roles import VIEWER_GROUP

from .conftest import production_env, settings_under, user_in
from .test_url_crawl import PAGE, access_rule
from .urlconf import crawl

PASSWORD = "correct horse battery staple"
COOKIE_SETTINGS = [
    "SESSION_COOKIE_SECURE", "SESSION_COOKIE_HTTPONLY", "SESSION_COOKIE_SAMESITE", "CSRF_COOKIE_SECURE",
    "CSRF_COOKIE_SAMESITE", "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS", "SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "SECURE_HSTS_PRELOAD", "SECURE_PROXY_SSL_HEADER", "CONTENT_SECURITY_POLICY",
]


@pytest.fixture
def viewer_web(viewer: User) -> Client:
    client = Client()
    client.force_login(viewer)
    return client


def assert_security_headers(response: HttpResponse) -> None:
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["X-Frame-Options"] == "DENY"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"
    policy = dict(part.strip().split(" ", 1) for part in response["Content-Security-Policy"].split(";"))
    assert policy["default-src"] == "'self'" and policy["script-src"] == "'self'"
    assert policy["style-src"] == "'self'" and policy["frame-ancestors"] == "'none'"
    assert policy["object-src"] == "'none'" and policy["base-uri"] == "'none'"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path",
    ["/", "/keys/", "/dashboard/charts/volume.json", "/api/usage", "/api/openapi.json", "/no/such/page"],
)
def test_every_kind_of_response_carries_the_security_headers(viewer_web: Client, path: str) -> None:
    assert_security_headers(viewer_web.get(path))


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/accounts/login/", "/", "/healthz", "/api/ingest"])
def test_anonymous_answers_carry_them_too(client: Client, path: str) -> None:
    assert_security_headers(client.post(path) if path == "/api/ingest" else client.get(path))


INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)(?![^>]*type=\"application/json\")[^>]*>", re.IGNORECASE)
INLINE_STYLE = re.compile(r"<style\b|\sstyle=", re.IGNORECASE)
INLINE_HANDLER = re.compile(r"<[^>]+\son[a-z]+\s*=", re.IGNORECASE)


@pytest.mark.django_db
def test_no_page_needs_inline_script_or_style(superuser: User) -> None:
    # What the policy would block in a browser, found in the HTML of every page (the admin included).
    client = Client()
    client.force_login(superuser)
    pages = [route.path for route in crawl() if access_rule(route) == PAGE] + [
        "/admin/", "/admin/keys/togetherkey/", "/admin/keys/togetherkey/add/", "/admin/auth/user/",
        "/api/docs", "/accounts/login/",
    ]
    found = {}
    for path in pages:
        response = client.get(path)
        if response.status_code != 200 or "html" not in response.get("Content-Type", ""):
            continue
        html = response.content.decode()
        patterns = (INLINE_SCRIPT, INLINE_STYLE, INLINE_HANDLER)
        hits = [pattern.pattern for pattern in patterns if pattern.search(html)]
        if hits:
            found[path] = hits

    assert found == {}


def test_the_inline_detectors_find_what_a_policy_would_block() -> None:
    assert INLINE_SCRIPT.search('<script>alert(1)</script>')
    assert not INLINE_SCRIPT.search('<script src="/static/x.js"></script>')
    assert not INLINE_SCRIPT.search('<script type="application/json" id="c">{}</script>')
    assert INLINE_STYLE.search('<span style="color: red">') and INLINE_STYLE.search("<style>p{}</style>")
    assert INLINE_HANDLER.search('<input onfocus="this.select()">')
    assert not INLINE_HANDLER.search('<input class="once" data-on="x">')


# ---- production versus development ------------------------------------------------------------------

@pytest.fixture
def production(tmp_path: Path, settings: object) -> dict[str, object]:
    """Apply what settings.py computes under the production environment to this test's settings."""
    values = settings_under(production_env(tmp_path), COOKIE_SETTINGS)
    for name, value in values.items():
        setattr(settings, name, tuple(value) if isinstance(value, list) else value)
    settings.ALLOWED_HOSTS = ["dash.example.com"]
    return values


def log_in(client: Client, user: User, **extra: object) -> HttpResponse:
    client.get("/accounts/login/", **extra)
    return client.post("/accounts/login/", {"username": user.username, "password": PASSWORD}, **extra)


@pytest.mark.django_db
def test_production_sends_hsts_and_only_secure_cookies(production: dict[str, object]) -> None:
    client = Client(HTTP_HOST="dash.example.com")
    user = user_in("pat", VIEWER_GROUP, password=PASSWORD)
    response = log_in(client, user, secure=True)

    assert response.status_code == 302
    assert response["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"
    session = client.cookies["sessionid"]
    assert session["secure"] and session["httponly"] and session["samesite"] == "Lax"
    csrf = client.cookies["csrftoken"]
    assert csrf["secure"] and csrf["samesite"] == "Lax"
    assert_security_headers(client.get("/", secure=True))


@pytest.mark.django_db
def test_production_redirects_plain_http_to_https_but_not_the_probes(production: dict[str, object]) -> None:
    client = Client(HTTP_HOST="dash.example.com")

    redirect = client.get("/accounts/login/")
    assert redirect.status_code == 301 and redirect["Location"] == "https://dash.example.com/accounts/login/"
    assert client.get("/healthz").status_code == 200


def test_behind_a_tls_proxy_the_forwarded_scheme_is_trusted_only_when_asked(tmp_path: Path) -> None:
    plain = settings_under(production_env(tmp_path), ["SECURE_PROXY_SSL_HEADER"])
    behind = settings_under(production_env(tmp_path, BEHIND_TLS_PROXY="true"), ["SECURE_PROXY_SSL_HEADER"])

    assert plain["SECURE_PROXY_SSL_HEADER"] is None
    assert behind["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]


@pytest.mark.django_db
def test_development_works_over_plain_http(client: Client, tmp_path: Path, settings: object) -> None:
    # `make run`: DEBUG on by default, http://127.0.0.1:8000, no HTTPS anywhere.
    env = production_env(tmp_path, DEBUG=None, SECRET_KEY=None, FIELD_ENCRYPTION_KEYS=None)
    for name, value in settings_under(env, COOKIE_SETTINGS).items():
        setattr(settings, name, value)
    user = user_in("dev", VIEWER_GROUP, password=PASSWORD)

    response = log_in(client, user)

    assert response.status_code == 302 and response["Location"] == "/"
    assert "Strict-Transport-Security" not in response
    assert not client.cookies["sessionid"]["secure"] and not client.cookies["csrftoken"]["secure"]
    assert client.get("/").status_code == 200
