"""Admin for keys and the audit log: no secret, ciphertext or hash is shown; changes go through lifecycle."""
from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from together_dash.core.roles import is_key_admin
from together_dash.keys import audit, lifecycle
from together_dash.keys.audit import Actor
from together_dash.keys.lifecycle import KeyActionError
from together_dash.keys.models import ApiToken, AppKey, AuditLog, RateLimitSnapshot, TogetherKey


def _admin_actor(request: HttpRequest) -> Actor:
    return Actor.from_request(request, via=AuditLog.Via.ADMIN)


class KeyAdminMixin:
    """Key admins (and superusers) alone may act on keys; nobody adds or deletes them here."""

    def has_key_admin_permission(self, request: HttpRequest) -> bool:
        return is_key_admin(request.user)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # created on the keys page, which verifies upstream keys and shows app keys once

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # revoke instead: deleting would cut the history and the charts

    def _one_selected(self, request: HttpRequest, queryset: QuerySet) -> Any:
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one key for this action.", messages.WARNING)
            return None
        return queryset.get()

    def _confirm_revoke(self, request: HttpRequest, queryset: QuerySet, revoke: Any) -> HttpResponse | None:
        """Django's delete pattern: the first POST shows a confirmation page, the second revokes."""
        if request.POST.get("confirm_revoke") != "yes":
            context = {
                **self.admin_site.each_context(request),
                "opts": self.model._meta,
                "title": "Revoke keys: are you sure?",
                "keys": list(queryset),
                "action": request.POST.get("action", ""),
            }
            return TemplateResponse(request, "keys/admin_revoke_confirm.html", context)
        actor, revoked = _admin_actor(request), 0
        for key in queryset:
            try:
                revoke(key, actor)
                revoked += 1
            except KeyActionError as exc:
                self.message_user(request, str(exc), messages.WARNING)
        self.message_user(request, f"Revoked {revoked} key(s).", messages.SUCCESS)
        return None


@admin.register(TogetherKey)
class TogetherKeyAdmin(KeyAdminMixin, admin.ModelAdmin):
    list_display = ("name", "key_hint", "status", "health", "health_checked_at", "rotated_at", "page_link")
    list_filter = ("status", "health")
    search_fields = ("name",)
    # An explicit allow-list: the ciphertexts and the fingerprint never reach a form or a page.
    fields = (
        "name", "key_hint", "status", "health", "health_checked_at", "health_detail", "organization_name",
        "project_name", "created_at", "created_by", "rotated_at", "rotated_by", "revoked_at", "revoked_by",
        "previous_valid_until", "page_link",
    )
    readonly_fields = fields
    actions = ("rotate_key", "revoke_keys")

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # rotate and revoke on the keys page; nothing else here is editable

    @admin.display(description="key")
    def key_hint(self, obj: TogetherKey) -> str:
        return f"…{obj.last_four}"

    @admin.display(description="keys page")
    def page_link(self, obj: TogetherKey) -> str:
        return format_html('<a href="{}">open</a>', reverse("keys-upstream-detail", args=[obj.pk]))

    @admin.action(description="Rotate the selected key (on the keys page)", permissions=["key_admin"])
    def rotate_key(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        key = self._one_selected(request, queryset)
        if key is None:
            return None
        return HttpResponseRedirect(reverse("keys-upstream-detail", args=[key.pk]) + "#rotate")

    @admin.action(description="Revoke the selected keys…", permissions=["key_admin"])
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        return self._confirm_revoke(request, queryset, lifecycle.revoke_upstream_key)


class IssuedKeyAdmin(KeyAdminMixin, admin.ModelAdmin):
    """Shared admin of app keys and API tokens: prefixes only, never hashes."""

    list_filter = ("status",)
    search_fields = ("name", "prefix")
    readonly_fields = (
        "key_hint", "status", "created_at", "created_by", "revoked_at", "last_used_at",
        "previous_valid_until",
    )
    actions = ("rotate_key", "revoke_keys")

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return is_key_admin(request.user) and super().has_change_permission(request, obj)

    @admin.display(description="key")
    def key_hint(self, obj: AppKey | ApiToken) -> str:
        return f"{obj.KIND}_{obj.prefix}_…"

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if change and form.changed_data:
            lifecycle.record_issued_key_update(obj, _admin_actor(request), form.changed_data)

    @admin.action(description="Revoke the selected keys…", permissions=["key_admin"])
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        return self._confirm_revoke(request, queryset, lifecycle.revoke_issued_key)


@admin.register(AppKey)
class AppKeyAdmin(IssuedKeyAdmin):
    list_display = (
        "name", "key_hint", "upstream_key", "status", "expires_at", "last_used_at", "rate_limit_per_minute",
    )
    list_filter = ("status", "upstream_key")
    fields = (
        "name", "key_hint", "upstream_key", "allowed_models", "rate_limit_per_minute", "expires_at",
        *IssuedKeyAdmin.readonly_fields[1:],
    )

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "upstream_key":
            kwargs["queryset"] = TogetherKey.objects.filter(status=TogetherKey.Status.ACTIVE)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    @admin.action(description="Rotate the selected key (on the keys page)", permissions=["key_admin"])
    def rotate_key(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        app_key = self._one_selected(request, queryset)
        if app_key is None:
            return None
        return HttpResponseRedirect(reverse("keys-app-detail", args=[app_key.pk]) + "#rotate")


@admin.register(ApiToken)
class ApiTokenAdmin(IssuedKeyAdmin):
    list_display = ("name", "key_hint", "status", "expires_at", "last_used_at")
    fields = ("name", "key_hint", "expires_at", *IssuedKeyAdmin.readonly_fields[1:])
    actions = ("revoke_keys",)


@admin.register(AuditLog)
class AuditLogAdmin(admin.ModelAdmin):
    list_display = ("created_at", "action", "outcome", "key_type", "key_id", "key_label", "username", "via",
                    "source_address", "detail")
    list_filter = ("action", "outcome", "key_type", "via", "created_at", "username")
    search_fields = ("key_label", "username", "source_address", "detail")
    date_hierarchy = "created_at"
    actions = ("export_csv",)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return is_key_admin(request.user) and super().has_view_permission(request, obj)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # an audit trail that admins can edit proves nothing

    @admin.action(description="Export the selected entries as CSV", permissions=["view"])
    def export_csv(self, request: HttpRequest, queryset: QuerySet) -> StreamingHttpResponse:
        rows = queryset.order_by("-created_at", "-id").iterator()
        response = StreamingHttpResponse(audit.csv_lines(rows), content_type="text/csv; charset=utf-8")
        stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
        response["Content-Disposition"] = f'attachment; filename="key-audit-{stamp}.csv"'
        return response


@admin.register(RateLimitSnapshot)
class RateLimitSnapshotAdmin(admin.ModelAdmin):
    """Written by the rate-limit poller; people read them (and may delete junk)."""

    list_display = (
        "taken_at", "key", "model", "source", "request_remaining", "request_limit", "token_remaining",
        "token_limit", "reset_seconds", "headroom_pct",
    )
    list_filter = ("source", "key")
    search_fields = ("model",)
    date_hierarchy = "taken_at"
    list_select_related = ("key",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object | None = None) -> bool:
        return False
