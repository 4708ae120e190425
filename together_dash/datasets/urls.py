"""Routes of the dataset validator, mounted at /datasets/."""
from __future__ import annotations

from django.urls import path

from together_dash.datasets import views

urlpatterns = [
    path("", views.dataset_list, name="datasets-list"),
    path("<int:validation_id>/", views.dataset_detail, name="datasets-detail"),
    path("<int:validation_id>/progress.json", views.dataset_progress, name="datasets-progress"),
]
