"""URL routes. The proxy (/v1/) is routed in asgi.py, before Django."""
from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from together_dash.api import api
from together_dash.core import views as core_views
from together_dash.dashboard.login import ThrottledLoginView

urlpatterns = [
    path("", include("together_dash.dashboard.urls")),
    path("healthz", core_views.healthz, name="core-healthz"),
    path("metrics", core_views.metrics, name="core-metrics"),
    path("accounts/login/", ThrottledLoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("api/", api.urls),
    path("keys/", include("together_dash.keys.urls")),
    path("tools/", include("together_dash.tools.urls")),
    path("alerts/", include("together_dash.alerts.urls")),
]
