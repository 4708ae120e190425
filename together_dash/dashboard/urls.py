"""Dashboard routes, mounted at the site root: the pages, and the chart endpoints under /dashboard/."""

from __future__ import annotations

from django.urls import path

from together_dash.dashboard.views import (
    billing,
    charts,
    errors,
    jobs,
    keys,
    models,
    overview,
    requests,
    runway,
)

urlpatterns = [
    path("", overview.overview, name="dashboard-overview"),
    path("errors/", errors.error_list, name="dashboard-errors"),
    path("errors/<int:group_id>/", errors.error_detail, name="dashboard-error"),
    path("requests/", requests.request_list, name="dashboard-requests"),
    path("requests/<int:log_id>/", requests.request_detail, name="dashboard-request"),
    path("models/", models.model_list, name="dashboard-models"),
    path("fine-tunes/", jobs.finetune_list, name="dashboard-finetunes"),
    path("fine-tunes/<str:job_id>/", jobs.finetune_detail, name="dashboard-finetune"),
    path("batches/", jobs.batch_list, name="dashboard-batches"),
    path("batches/<str:batch_id>/remainder.jsonl", jobs.batch_remainder, name="dashboard-batch-remainder"),
    path("billing/", billing.billing, name="dashboard-billing"),
    path("dashboard/keys/", keys.key_list, name="dashboard-keys"),
    path("dashboard/keys/<int:key_id>/", keys.key_detail, name="dashboard-key"),
    path("dashboard/runway/", runway.runway_page, name="dashboard-runway"),
    path("dashboard/runway/balance", runway.enter_balance, name="dashboard-runway-balance"),
    # Every route named dashboard-chart-* takes only query parameters: the scale benchmark times them all.
    path("dashboard/charts/categories.json", charts.categories, name="dashboard-chart-categories"),
    path("dashboard/charts/volume.json", charts.volume, name="dashboard-chart-volume"),
    path("dashboard/charts/quota.json", charts.quota, name="dashboard-chart-quota"),
    path("dashboard/charts/finetunes.json", charts.finetunes, name="dashboard-chart-finetunes"),
]
