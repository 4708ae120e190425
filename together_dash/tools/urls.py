"""Routes of the tools app, mounted at /tools/."""
from __future__ import annotations

from django.urls import path

from together_dash.tools import views

urlpatterns = [
    path("datasets/", views.dataset_list, name="tools-dataset-list"),
    path("datasets/<int:validation_id>/", views.dataset_detail, name="tools-dataset-detail"),
    path("datasets/<int:validation_id>/progress.json", views.dataset_progress, name="tools-dataset-progress"),
]
