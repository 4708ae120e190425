"""The login page, throttled against password guessing.

Failed logins are counted in the cache per (username, client address) and per client address; past
the limit every attempt, right or wrong, is refused with 429 until the window ends. With more than
one web process, set CACHE_URL to a shared cache (Redis) so the counts are shared too.
Every attempt that reaches the password check is audited; with PASSWORD_LOGIN=false no password is
checked at all and the page offers single sign-on only (together_dash/dashboard/sso.py).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.views import LoginView
from django.core.cache import cache
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.http import HttpRequest, HttpResponse, QueryDict

from together_dash.dashboard.sso import FAILED, record_sign_in
from together_dash.keys.models import AuditLog

SUCCESS, FAILURE = AuditLog.Outcome.SUCCESS, AuditLog.Outcome.FAILURE
WINDOW_SECONDS = 15 * 60
FAILURES_PER_USERNAME = 5
# Many usernames tried from one address (password spraying); high enough for an office behind one NAT.
FAILURES_PER_ADDRESS = 30
TOO_MANY = "Too many failed attempts. Wait 15 minutes and try again, or ask an admin to reset your password."


@dataclass(frozen=True, slots=True)
class LoginThrottle:
    """Failure counters for one login attempt's username and client address."""

    username: str
    address: str

    @classmethod
    def for_request(cls, request: HttpRequest, username: str) -> LoginThrottle:
        # REMOTE_ADDR only: X-Forwarded-For is whatever the client wants it to be unless a trusted
        # proxy sets it, and trusting it would let a guesser pick a fresh address for every try.
        return cls(username.strip().lower(), request.META.get("REMOTE_ADDR", ""))

    @property
    def _counters(self) -> tuple[tuple[str, int], ...]:
        return (
            (_cache_key("user", f"{self.username}|{self.address}"), FAILURES_PER_USERNAME),
            (_cache_key("addr", self.address), FAILURES_PER_ADDRESS),
        )

    def is_blocked(self) -> bool:
        return any((cache.get(key) or 0) >= limit for key, limit in self._counters)

    def record_failure(self) -> None:
        # add() starts the window on the first failure only; incr() never extends it.
        for key, _ in self._counters:
            cache.add(key, 0, timeout=WINDOW_SECONDS)
            try:
                cache.incr(key)
            except ValueError:  # expired between add() and incr(): this failure starts a new window
                cache.set(key, 1, timeout=WINDOW_SECONDS)

    def clear(self) -> None:
        """A successful login forgets this username's failures (not the address's)."""
        cache.delete(self._counters[0][0])


def _cache_key(kind: str, value: str) -> str:
    return f"login-failures:{kind}:{hashlib.sha256(value.encode()).hexdigest()}"


class ThrottledLoginMixin:
    """Checks the throttle before the password, so a blocked guesser learns nothing either way."""

    request: HttpRequest
    data: QueryDict

    def clean(self) -> dict[str, Any]:
        throttle = LoginThrottle.for_request(self.request, self.data.get("username", ""))
        if throttle.is_blocked():
            raise ValidationError(TOO_MANY, code="throttled")
        try:
            cleaned = super().clean()
        except ValidationError:
            throttle.record_failure()
            # Not the username typed: people paste their password there by mistake.
            record_sign_in(self.request, None, "password", FAILURE, "refused", via=self.audit_via)
            raise
        record_sign_in(self.request, self.get_user(), "password", SUCCESS, via=self.audit_via)
        return cleaned


class ThrottledAuthenticationForm(ThrottledLoginMixin, AuthenticationForm):
    """The dashboard's login form."""

    audit_via = AuditLog.Via.WEB


class ThrottledAdminAuthenticationForm(ThrottledLoginMixin, AdminAuthenticationForm):
    """The admin's login form, sharing the same counters: /admin/login/ is no way around the throttle."""

    audit_via = AuditLog.Via.ADMIN


SSO_MESSAGES = {
    FAILED: "Sign-in with {name} did not succeed. Try again; if it keeps failing, ask an administrator "
    "to look at the audit log.",
    "unavailable": "{name} cannot be reached right now, so single sign-on is unavailable. Try again later.",
}


class ThrottledLoginView(LoginView):
    authentication_form = ThrottledAuthenticationForm

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not settings.PASSWORD_LOGIN:
            context = self.get_context_data(password_refused=True)
            return self.render_to_response(context, status=403)
        return super().post(request, *args, **kwargs)

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        message = SSO_MESSAGES.get(self.request.GET.get("sso", ""), "")
        return super().get_context_data(
            password_login=settings.PASSWORD_LOGIN,
            sso_message=message.format(name=settings.OIDC_PROVIDER_NAME),
            **kwargs,
        )

    def form_valid(self, form: AuthenticationForm) -> HttpResponse:
        LoginThrottle.for_request(self.request, form.cleaned_data.get("username", "")).clear()
        return super().form_valid(form)

    def form_invalid(self, form: AuthenticationForm) -> HttpResponse:
        response = super().form_invalid(form)
        if form.has_error(NON_FIELD_ERRORS, "throttled"):
            response.status_code = 429
            response["Retry-After"] = str(WINDOW_SECONDS)
        return response
