"""Single sign-on through an OpenID Connect provider, on mozilla-django-oidc.

The library runs the authorization code flow (state, nonce, PKCE) and fetches the tokens and the
userinfo. This module adds what it leaves to the site: the provider's endpoints from discovery, a full
check of the ID token (signature, issuer, audience, expiry), users matched by their stable subject
rather than by email, the roles mapped from a claim at every sign-in, and the audit trail.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from typing import Any

import httpx
import jwt
import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import Group, User
from django.core.exceptions import SuspiciousOperation
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from mozilla_django_oidc.utils import import_from_settings
from mozilla_django_oidc.views import OIDCAuthenticationCallbackView, OIDCAuthenticationRequestView

from together_dash.core.roles import KEY_ADMIN_GROUP, VIEWER_GROUP, is_key_admin, is_viewer
from together_dash.keys import audit
from together_dash.keys.models import AuditLog

logger = logging.getLogger(__name__)

DISCOVERY_SECONDS = 3600
# Clock difference allowed between the provider and this server when checking exp, iat and nbf.
LEEWAY_SECONDS = 30
ENDPOINTS = {
    "OIDC_OP_AUTHORIZATION_ENDPOINT": "authorization_endpoint",
    "OIDC_OP_TOKEN_ENDPOINT": "token_endpoint",
    "OIDC_OP_USER_ENDPOINT": "userinfo_endpoint",
    "OIDC_OP_JWKS_ENDPOINT": "jwks_uri",
}
FAILED = "failed"


class DiscoveryError(Exception):
    """The issuer's discovery document could not be read or does not describe this issuer."""


class _Discovery:
    """The issuer's openid-configuration, read on first use and again after DISCOVERY_SECONDS."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._document: dict[str, Any] = {}
        self._issuer = ""
        self._read_at = 0.0

    def document(self) -> dict[str, Any]:
        with self._lock:
            fresh = time.monotonic() - self._read_at < DISCOVERY_SECONDS
            if not (fresh and self._issuer == settings.OIDC_ISSUER):
                self._document = _read_discovery(settings.OIDC_ISSUER)
                self._issuer, self._read_at = settings.OIDC_ISSUER, time.monotonic()
            return self._document

    def forget(self) -> None:
        with self._lock:
            self._read_at = 0.0


discovery = _Discovery()


def _read_discovery(issuer: str) -> dict[str, Any]:
    url = f"{issuer}/.well-known/openid-configuration"
    try:
        response = httpx.get(url, timeout=settings.OIDC_TIMEOUT, follow_redirects=True)
        response.raise_for_status()
        document = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise DiscoveryError(f"could not read {url}: {exc.__class__.__name__}") from None
    if not isinstance(document, dict) or document.get("issuer", "").rstrip("/") != issuer:
        raise DiscoveryError(f"{url} describes another issuer than OIDC_ISSUER={issuer!r}")
    missing = [name for name in ENDPOINTS.values() if not document.get(name)]
    if missing:
        raise DiscoveryError(f"{url} lacks {', '.join(missing)}")
    return document


def sso_setting(attr: str, *args: Any) -> Any:
    """mozilla-django-oidc's settings, with the provider's endpoints taken from discovery."""
    if attr in ENDPOINTS:
        return discovery.document()[ENDPOINTS[attr]]
    return import_from_settings(attr, *args)


def roles_from_claims(claims: dict[str, Any]) -> set[str]:
    """The dashboard roles (Django group names) that the groups claim grants."""
    value = claims.get(settings.OIDC_GROUPS_CLAIM) or []
    groups = {value} if isinstance(value, str) else {str(name) for name in value if isinstance(name, str)}
    roles = set()
    if groups & set(settings.OIDC_VIEWER_GROUPS):
        roles.add(VIEWER_GROUP)
    if groups & set(settings.OIDC_KEY_ADMIN_GROUPS):
        roles.add(KEY_ADMIN_GROUP)
    return roles


def username_for(subject: str) -> str:
    """A local username from the provider's subject: stable, and never the name of a local account."""
    name = f"sso-{subject}"
    return name if len(name) <= 150 else f"sso-{hashlib.sha256(subject.encode()).hexdigest()}"


def _role_label(roles: set[str]) -> str:
    return ", ".join(sorted(roles)) or "no role"


def set_roles(user: User, roles: set[str], actor: audit.Actor) -> None:
    """Give the user exactly these dashboard roles, and audit the change if there is one."""
    current = set(user.groups.filter(name__in=[VIEWER_GROUP, KEY_ADMIN_GROUP]).values_list("name", flat=True))
    if current == roles:
        return
    user.groups.remove(*Group.objects.filter(name__in=current - roles))
    user.groups.add(*(Group.objects.get_or_create(name=name)[0] for name in roles - current))
    detail = f"{_role_label(current)} -> {_role_label(roles)} (groups claim of {settings.OIDC_PROVIDER_NAME})"
    audit.record(
        AuditLog.Action.ROLE_CHANGE, AuditLog.Outcome.SUCCESS, actor,
        key=user, key_type=AuditLog.KeyType.ACCOUNT, detail=detail,
    )


def _actor(request: HttpRequest, user: User | None = None, via: str = AuditLog.Via.WEB) -> audit.Actor:
    address = request.META.get("REMOTE_ADDR") or None
    return audit.Actor(user=user, via=via, source_address=address)


def record_sign_in(
    request: HttpRequest, user: User | None, how: str, outcome: str, reason: str = "",
    via: str = AuditLog.Via.WEB,
) -> None:
    """One audit row per sign-in attempt, by password or by single sign-on."""
    detail = how if not reason else f"{how}: {reason}"
    audit.record(
        AuditLog.Action.SIGN_IN, outcome, _actor(request, user, via),
        key=user, key_type=AuditLog.KeyType.ACCOUNT, detail=detail,
    )


class SsoBackend(OIDCAuthenticationBackend):
    """Signs in the provider's users as local accounts named after their subject, with mapped roles."""

    get_settings = staticmethod(sso_setting)
    OIDC_OP_TOKEN_ENDPOINT = property(lambda self: sso_setting("OIDC_OP_TOKEN_ENDPOINT"))
    OIDC_OP_USER_ENDPOINT = property(lambda self: sso_setting("OIDC_OP_USER_ENDPOINT"))
    OIDC_OP_JWKS_ENDPOINT = property(lambda self: sso_setting("OIDC_OP_JWKS_ENDPOINT"))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Not the library's, which reads the endpoints here: Django builds every backend for each
        # password login and each signed-in request, and those must not wait on (or fail with) the
        # provider. The endpoints are looked up when a code comes back.
        self.OIDC_RP_CLIENT_ID = settings.OIDC_RP_CLIENT_ID
        self.OIDC_RP_CLIENT_SECRET = settings.OIDC_RP_CLIENT_SECRET
        self.OIDC_RP_SIGN_ALGO = settings.OIDC_RP_SIGN_ALGO
        self.OIDC_RP_IDP_SIGN_KEY = None
        self.UserModel = get_user_model()

    def authenticate(self, request: HttpRequest | None, **kwargs: Any) -> User | None:
        if request is None or "code" not in request.GET:
            return None
        try:
            return super().authenticate(request, **kwargs)
        except (SuspiciousOperation, DiscoveryError, requests.RequestException) as exc:
            # The reasons are the library's and PyJWT's own sentences; none quotes a token or secret.
            reason = str(exc) if not isinstance(exc, requests.RequestException) else exc.__class__.__name__
            logger.warning("Sign-in with %s refused: %s", settings.OIDC_PROVIDER_NAME, reason)
            record_sign_in(request, None, self._how(), AuditLog.Outcome.FAILURE, reason)
            return None

    def _verify_jws(self, payload: str, key: Any) -> dict[str, Any]:
        # The library checks the signature and the expiry only; the issuer and audience matter as much.
        try:
            return jwt.decode(
                payload, key, algorithms=[self.OIDC_RP_SIGN_ALGO], audience=self.OIDC_RP_CLIENT_ID,
                issuer=discovery.document()["issuer"], leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.InvalidTokenError as exc:
            raise SuspiciousOperation(f"ID token refused: {exc}") from None

    def retrieve_matching_jwk(self, token: str) -> Any:
        try:
            return super().retrieve_matching_jwk(token)
        except jwt.InvalidTokenError as exc:  # a header that is not a JWT at all
            raise SuspiciousOperation(f"ID token refused: {exc}") from None

    def verify_claims(self, claims: dict[str, Any]) -> bool:
        return bool(claims.get("sub"))

    def filter_users_by_claims(self, claims: dict[str, Any]) -> Any:
        return self.UserModel.objects.filter(username=username_for(claims["sub"]))

    def create_user(self, claims: dict[str, Any]) -> User:
        user = self.UserModel.objects.create_user(username_for(claims["sub"]), email=claims.get("email", ""))
        return self.update_user(user, claims)

    def update_user(self, user: User, claims: dict[str, Any]) -> User:
        display = str(claims.get("preferred_username") or claims.get("name") or "")[:150]
        email = str(claims.get("email") or "")[:254]
        if (user.first_name, user.email) != (display, email):
            user.first_name, user.email = display, email
            user.save(update_fields=["first_name", "email"])
        set_roles(user, roles_from_claims(claims), _actor(self.request, user))
        return user

    def _how(self) -> str:
        return f"single sign-on ({settings.OIDC_PROVIDER_NAME})"


class SsoAuthenticateView(OIDCAuthenticationRequestView):
    """Sends the browser to the provider; one that cannot be discovered is said so on the login page."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # The library's own reads the endpoint here, when the view is built: discovery waits for get().
        super(OIDCAuthenticationRequestView, self).__init__(*args, **kwargs)
        self.OIDC_RP_CLIENT_ID = settings.OIDC_RP_CLIENT_ID

    def get(self, request: HttpRequest) -> HttpResponse:
        if not settings.OIDC_ENABLED:
            raise Http404("Single sign-on is not configured.")
        try:
            self.OIDC_OP_AUTH_ENDPOINT = sso_setting("OIDC_OP_AUTHORIZATION_ENDPOINT")
        except DiscoveryError as exc:
            logger.warning("Sign-in with %s unavailable: %s", settings.OIDC_PROVIDER_NAME, exc)
            return HttpResponseRedirect(f"{reverse('login')}?sso=unavailable")
        return super().get(request)


class SsoCallbackView(OIDCAuthenticationCallbackView):
    """The provider's redirect back: signs the user in, audits it, and lands them by role."""

    def get(self, request: HttpRequest) -> HttpResponse:
        if not settings.OIDC_ENABLED:
            raise Http404("Single sign-on is not configured.")
        return super().get(request)

    @property
    def failure_url(self) -> str:
        return f"{reverse('login')}?sso={FAILED}"

    @property
    def success_url(self) -> str:
        return self.request.session.get("oidc_login_next") or reverse("dashboard-landing")

    def login_success(self) -> HttpResponse:
        response = super().login_success()
        how = f"single sign-on ({settings.OIDC_PROVIDER_NAME})"
        record_sign_in(self.request, self.user, how, AuditLog.Outcome.SUCCESS)
        return response


@require_GET
@login_required
def landing(request: HttpRequest) -> HttpResponse:
    """Where a sign-in lands: key admins on the keys, viewers on the overview, others on "no role"."""
    if is_key_admin(request.user):
        return redirect("keys-list")
    if is_viewer(request.user):
        return redirect("dashboard-overview")
    return render(request, "registration/no_role.html", status=403)
