"""Admin for dataset validations: read-only records of what was checked and the verdict."""
from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from together_dash.datasets.models import DatasetValidation


@admin.register(DatasetValidation)
class DatasetValidationAdmin(admin.ModelAdmin):
    list_display = ("filename", "status", "progress", "error_count", "model_id", "created_by", "created_at")
    list_filter = ("status", "purpose")
    search_fields = ("filename", "model_id")
    readonly_fields = [field.name for field in DatasetValidation._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
