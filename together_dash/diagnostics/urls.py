"""Routes of the diagnostics, mounted at /diagnostics/."""
from __future__ import annotations

from django.urls import path

from together_dash.diagnostics import views

urlpatterns = [
    path("preflight/", views.preflight, name="diagnostics-preflight"),
    path("debug-bundle/", views.debug_bundle, name="diagnostics-debug-bundle"),
]
