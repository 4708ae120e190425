from __future__ import annotations

from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "together_dash.billing"
    label = "billing"
    verbose_name = "Billing usage"
