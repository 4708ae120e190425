"""Key pages under /keys/. Action URLs accept POST only; their forms live on separate GET pages."""
from __future__ import annotations

from django.urls import path

from together_dash.keys import views

urlpatterns = [
    path("", views.key_list, name="keys-list"),
    path("audit/", views.audit_log, name="keys-audit"),
    path("audit.csv", views.audit_csv, name="keys-audit-csv"),
    path("upstream/new/", views.upstream_new, name="keys-upstream-new"),
    path("upstream/add", views.upstream_add, name="keys-upstream-add"),
    path("upstream/<int:key_id>/", views.upstream_detail, name="keys-upstream-detail"),
    path("upstream/<int:key_id>/rotate", views.upstream_rotate, name="keys-upstream-rotate"),
    path("upstream/<int:key_id>/rollback", views.upstream_rollback, name="keys-upstream-rollback"),
    path(
        "upstream/<int:key_id>/revoke/confirm/",
        views.upstream_revoke_confirm,
        name="keys-upstream-revoke-confirm",
    ),
    path("upstream/<int:key_id>/revoke", views.upstream_revoke, name="keys-upstream-revoke"),
    path("app/new/", views.app_key_new, name="keys-app-new"),
    path("app/create", views.app_key_create, name="keys-app-create"),
    path("app/<int:key_id>/", views.app_key_detail, name="keys-app-detail"),
    path("app/<int:key_id>/rotate", views.app_key_rotate, name="keys-app-rotate"),
    path("app/<int:key_id>/revoke/confirm/", views.app_key_revoke_confirm, name="keys-app-revoke-confirm"),
    path("app/<int:key_id>/revoke", views.app_key_revoke, name="keys-app-revoke"),
]
