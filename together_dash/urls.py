"""URL routes. The proxy (/v1/) is routed in asgi.py, before Django."""
from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, re_path
from django.views.decorators.http import require_GET
from django.views.generic import RedirectView

from together_dash.api import api
from together_dash.core import views as core_views
from together_dash.dashboard import sso
from together_dash.dashboard.login import ThrottledLoginView
from together_dash.metrics import views as metrics_views

urlpatterns = [
    path("", include("together_dash.dashboard.urls")),
    path("healthz", core_views.healthz, name="core-healthz"),
    path("metrics", metrics_views.scrape, name="metrics-scrape"),
    path("accounts/login/", ThrottledLoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/landing/", sso.landing, name="dashboard-landing"),
    # Single sign-on (dashboard/sso.py): 404 until configured. The callback is the redirect URI, and
    # keeps mozilla-django-oidc's URL names, which the library reverses.
    path("oidc/authenticate/", sso.SsoAuthenticateView.as_view(), name="oidc_authentication_init"),
    path("oidc/callback/", sso.SsoCallbackView.as_view(), name="oidc_authentication_callback"),
    path("admin/", admin.site.urls),
    path("api/", api.urls),
    path("keys/", include("together_dash.keys.urls")),
    path("datasets/", include("together_dash.datasets.urls")),
    path("diagnostics/", include("together_dash.diagnostics.urls")),
    # The pages lived under /tools/ before datasets and diagnostics became apps of their own: old
    # bookmarks still land on them.
    re_path(r"^tools/datasets/(?P<rest>.*)$", require_GET(RedirectView.as_view(url="/datasets/%(rest)s"))),
    re_path(r"^tools/preflight/$", require_GET(RedirectView.as_view(url="/diagnostics/preflight/"))),
    path("alerts/", include("together_dash.alerts.urls")),
    path("endpoints/", include("together_dash.endpoints.urls")),
    path("budgets/", include("together_dash.budgets.urls")),
]
