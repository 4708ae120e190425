"""Budget pages under /budgets/."""
from __future__ import annotations

from django.urls import path

from together_dash.budgets import views

urlpatterns = [
    path("", views.budget_list, name="budgets-list"),
    path("new/", views.budget_new, name="budgets-new"),
    path("<int:budget_id>/edit/", views.budget_edit, name="budgets-edit"),
    path("<int:budget_id>/delete", views.budget_delete, name="budgets-delete"),
]
