from __future__ import annotations

from django.urls import path

from together_dash.alerts import views

urlpatterns = [
    path("", views.alerts_page, name="alerts-page"),
    path("<int:alert_id>/", views.alert_detail, name="alerts-detail"),
    path("rules/<int:rule_id>/mute", views.mute_rule, name="alerts-mute"),
    path("rules/<int:rule_id>/unmute", views.unmute_rule, name="alerts-unmute"),
]
