from __future__ import annotations

from django.urls import path

from together_dash.endpoints import views

urlpatterns = [
    path("", views.endpoint_list, name="endpoints-list"),
    path("<str:endpoint_id>/", views.endpoint_detail, name="endpoints-detail"),
]
