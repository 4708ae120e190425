"""Routes of the tools app, mounted at /tools/."""
from __future__ import annotations

from django.urls import path

from together_dash.tools import tool_views, views

urlpatterns = [
    path("datasets/", views.dataset_list, name="tools-dataset-list"),
    path("datasets/<int:validation_id>/", views.dataset_detail, name="tools-dataset-detail"),
    path("datasets/<int:validation_id>/progress.json", views.dataset_progress, name="tools-dataset-progress"),
    path("preflight/", tool_views.preflight, name="tools-preflight"),
    path("debug-bundle/", tool_views.debug_bundle, name="tools-debug-bundle"),
]
