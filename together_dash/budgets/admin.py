"""Budgets in the admin (the /budgets/ page is the usual place to edit them)."""
from __future__ import annotations

from django.contrib import admin

from together_dash.budgets.models import Budget


@admin.register(Budget)
class BudgetAdmin(admin.ModelAdmin):
    list_display = ("name", "scope", "period", "amount_usd", "thresholds", "enforce", "created_at")
    list_filter = ("scope", "period", "enforce")
    search_fields = ("name", "model", "project")
    raw_id_fields = ("app_key", "upstream_key")
    readonly_fields = ("created_at", "created_by")
