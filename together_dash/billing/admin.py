"""Admin for what Together billed: read-only, as the poller stored it."""
from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from together_dash.billing.models import (
    BillingDay,
    BillingLineItem,
    BillingMonth,
    BillingWindow,
    CreditBalance,
    Organization,
)
from together_dash.pollers.admin import PolledDataAdmin


@admin.register(Organization)
class OrganizationAdmin(PolledDataAdmin):
    list_display = ("organization_id", "name", "first_seen", "last_seen", "last_polled_at")
    search_fields = ("organization_id", "name")


@admin.register(BillingMonth)
class BillingMonthAdmin(PolledDataAdmin):
    list_display = ("month", "organization", "granularity", "windows", "cost", "fetched_at")
    list_filter = ("month", "organization")


@admin.register(BillingWindow)
class BillingWindowAdmin(PolledDataAdmin):
    list_display = ("start_time", "organization", "granularity", "cost", "revisions", "fetched_at")
    list_filter = ("organization", "granularity")
    date_hierarchy = "start_time"


@admin.register(BillingLineItem)
class BillingLineItemAdmin(PolledDataAdmin):
    list_display = ("start_time", "organization", "product_name", "quantity", "unit_price", "cost")
    list_filter = ("organization", "product_name")
    search_fields = ("product_name",)
    date_hierarchy = "start_time"


@admin.register(CreditBalance)
class CreditBalanceAdmin(PolledDataAdmin):
    """Entered on the runway page or with set_credit_balance, where they are checked and audited."""

    list_display = ("entered_at", "organization", "balance_usd", "as_of", "entered_by_name", "via")
    list_filter = ("organization", "via")

    def has_delete_permission(self, request: HttpRequest, obj: object | None = None) -> bool:
        return False  # the history is kept: a wrong entry is corrected by a newer one


@admin.register(BillingDay)
class BillingDayAdmin(PolledDataAdmin):
    list_display = ("day", "organization", "product_name", "quantity", "cost")
    list_filter = ("organization", "product_name")
    date_hierarchy = "day"
