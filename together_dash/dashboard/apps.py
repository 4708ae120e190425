"""The dashboard: overview, errors, requests, models, jobs and key usage pages, and their chart endpoints."""

from __future__ import annotations

from django.apps import AppConfig


class DashboardConfig(AppConfig):
    name = "together_dash.dashboard"
    label = "dashboard"
    verbose_name = "Dashboard"

    def ready(self) -> None:
        from django.contrib import admin

        from together_dash.dashboard.login import ThrottledAdminAuthenticationForm

        # The admin has its own login page; it gets the same guessing throttle as /accounts/login/.
        admin.site.login_form = ThrottledAdminAuthenticationForm
