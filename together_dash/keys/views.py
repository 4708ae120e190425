"""Key pages: everyone with a role sees keys and their health; only key admins act, always by POST."""
from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, QueryDict, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from together_dash.core.roles import is_key_admin, key_admin_required, viewer_required
from together_dash.keys import audit, lifecycle
from together_dash.keys.audit import Actor
from together_dash.keys.forms import (
    AddUpstreamKeyForm,
    ConfirmRevokeForm,
    CreateAppKeyForm,
    RotateIssuedKeyForm,
    RotateUpstreamKeyForm,
)
from together_dash.keys.lifecycle import TOGETHER_KEYS_URL, KeyActionError
from together_dash.keys.models import AppKey, AuditLog, TogetherKey

Action, KeyType = AuditLog.Action, AuditLog.KeyType


def _require_key_admin(request: HttpRequest, action: str, **target: object) -> Actor:
    """The acting admin; a viewer's attempt is audited as a failure, then refused with 403."""
    actor = Actor.from_request(request)
    if not is_key_admin(request.user):
        audit.record(action, AuditLog.Outcome.FAILURE, actor, detail="refused: not a key admin", **target)
        raise PermissionDenied("Only key admins can do this.")
    return actor


# ---- pages anyone with a role can read ---------------------------------------------------------------

@require_GET
@viewer_required
def key_list(request: HttpRequest) -> HttpResponse:
    """Upstream keys with their health, and the app keys that map to them."""
    context = {
        "upstream_keys": TogetherKey.objects.select_related("rotated_by"),
        "app_keys": AppKey.objects.select_related("upstream_key").order_by("status", "name"),
        "can_act": is_key_admin(request.user),
    }
    return render(request, "keys/list.html", context)


@require_GET
@viewer_required
def upstream_detail(request: HttpRequest, key_id: int) -> HttpResponse:
    """One upstream key: health, rotation state and, for key admins, the actions and the history."""
    key = get_object_or_404(TogetherKey, pk=key_id)
    return _upstream_page(request, key, RotateUpstreamKeyForm())


def _upstream_page(
    request: HttpRequest, key: TogetherKey, form: RotateUpstreamKeyForm, status: int = 200
) -> HttpResponse:
    can_act = is_key_admin(request.user)
    context = {
        "key": key,
        "form": form,
        "can_act": can_act and key.is_active,
        "history": audit.history(key)[:50] if can_act else None,
        "together_keys_url": TOGETHER_KEYS_URL,
    }
    return render(request, "keys/upstream_detail.html", context, status=status)


@require_GET
@viewer_required
def app_key_detail(request: HttpRequest, key_id: int) -> HttpResponse:
    """One app key: settings, state and, for key admins, the actions and the history."""
    app_key = get_object_or_404(AppKey.objects.select_related("upstream_key"), pk=key_id)
    return _app_key_page(request, app_key, RotateIssuedKeyForm())


def _app_key_page(
    request: HttpRequest, app_key: AppKey, form: RotateIssuedKeyForm, status: int = 200
) -> HttpResponse:
    can_act = is_key_admin(request.user)
    context = {
        "app_key": app_key,
        "form": form,
        "can_act": can_act and app_key.status == AppKey.Status.ACTIVE,
        "history": audit.history(app_key)[:50] if can_act else None,
    }
    return render(request, "keys/app_key_detail.html", context, status=status)


# ---- upstream key actions ------------------------------------------------------------------------------

@require_GET
@key_admin_required
def upstream_new(request: HttpRequest) -> HttpResponse:
    """The form to add a Together key."""
    return render(request, "keys/upstream_new.html", {"form": AddUpstreamKeyForm()})


@require_POST
@viewer_required
def upstream_add(request: HttpRequest) -> HttpResponse:
    """Verify and store a new Together key."""
    actor = _require_key_admin(request, Action.CREATE, key_type=KeyType.UPSTREAM)
    form = AddUpstreamKeyForm(request.POST)
    if form.is_valid():
        try:
            key = lifecycle.add_upstream_key(form.cleaned_data["name"], form.cleaned_data["secret"], actor)
        except KeyActionError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Added {key}; Together accepted it.")
            return redirect("keys-upstream-detail", key_id=key.pk)
    return render(request, "keys/upstream_new.html", {"form": form}, status=400)


@require_POST
@viewer_required
def upstream_rotate(request: HttpRequest, key_id: int) -> HttpResponse:
    """Verify a new secret and switch the key to it at once."""
    key = get_object_or_404(TogetherKey, pk=key_id)
    actor = _require_key_admin(request, Action.ROTATE, key=key)
    form = RotateUpstreamKeyForm(request.POST)
    if form.is_valid():
        try:
            lifecycle.rotate_upstream_key(key, form.cleaned_data["secret"], actor, grace=form.grace())
        except KeyActionError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Rotated {key}. Revoke the old secret at Together when you are ready.")
            return redirect("keys-upstream-detail", key_id=key.pk)
    key.refresh_from_db()
    return _upstream_page(request, key, form, status=400)


@require_POST
@viewer_required
def upstream_rollback(request: HttpRequest, key_id: int) -> HttpResponse:
    """Go back to the previous secret while its grace window lasts."""
    key = get_object_or_404(TogetherKey, pk=key_id)
    actor = _require_key_admin(request, Action.ROLLBACK, key=key)
    try:
        lifecycle.rollback_upstream_key(key, actor)
    except KeyActionError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"{key} uses its previous secret again.")
    return redirect("keys-upstream-detail", key_id=key.pk)


@require_GET
@key_admin_required
def upstream_revoke_confirm(request: HttpRequest, key_id: int) -> HttpResponse:
    """The confirmation step before revoking a Together key."""
    key = get_object_or_404(TogetherKey, pk=key_id)
    context = {"key": key, "form": ConfirmRevokeForm(), "app_keys": key.app_keys.filter(status="active")}
    return render(request, "keys/upstream_revoke.html", context)


@require_POST
@viewer_required
def upstream_revoke(request: HttpRequest, key_id: int) -> HttpResponse:
    """Revoke a Together key for good."""
    key = get_object_or_404(TogetherKey, pk=key_id)
    actor = _require_key_admin(request, Action.REVOKE, key=key)
    form = ConfirmRevokeForm(request.POST)
    if not form.is_valid():
        context = {"key": key, "form": form, "app_keys": key.app_keys.filter(status="active")}
        return render(request, "keys/upstream_revoke.html", context, status=400)
    try:
        lifecycle.revoke_upstream_key(key, actor)
    except KeyActionError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Revoked {key} here. Now revoke it at Together too.")
    return redirect("keys-upstream-detail", key_id=key.pk)


# ---- app key actions -----------------------------------------------------------------------------------

@require_GET
@key_admin_required
def app_key_new(request: HttpRequest) -> HttpResponse:
    """The form to create an app key."""
    return render(request, "keys/app_key_new.html", {"form": CreateAppKeyForm()})


@require_POST
@viewer_required
@never_cache
def app_key_create(request: HttpRequest) -> HttpResponse:
    """Create an app key and show it, this once."""
    actor = _require_key_admin(request, Action.CREATE, key_type=KeyType.APP)
    form = CreateAppKeyForm(request.POST)
    if form.is_valid():
        data = form.cleaned_data
        try:
            app_key, plaintext = lifecycle.create_app_key(
                data["name"], actor, upstream=data["upstream"], allowed_models=data["allowed_models"],
                rate_limit_per_minute=data["rate_limit_per_minute"], expires_at=data["expires_at"],
            )
        except KeyActionError as exc:
            form.add_error(None, str(exc))
        else:
            return _show_once(request, app_key, plaintext, "created")
    return render(request, "keys/app_key_new.html", {"form": form}, status=400)


def _show_once(request: HttpRequest, app_key: AppKey, plaintext: str, verb: str) -> HttpResponse:
    # Rendered into this one response only (never a redirect, session or message); no-store keeps it
    # out of the browser's and any proxy's cache.
    context = {"app_key": app_key, "plaintext": plaintext, "verb": verb}
    response = render(request, "keys/app_key_secret.html", context)
    response["Cache-Control"] = "no-store, no-cache, must-revalidate, private, max-age=0"
    response["Pragma"] = "no-cache"
    return response


@require_POST
@viewer_required
@never_cache
def app_key_rotate(request: HttpRequest, key_id: int) -> HttpResponse:
    """Issue a new secret for an app key and show it once; the old one lasts for the grace window."""
    app_key = get_object_or_404(AppKey, pk=key_id)
    actor = _require_key_admin(request, Action.ROTATE, key=app_key)
    form = RotateIssuedKeyForm(request.POST)
    if form.is_valid():
        try:
            plaintext = lifecycle.rotate_issued_key(app_key, actor, grace=form.grace())
        except KeyActionError as exc:
            form.add_error(None, str(exc))
        else:
            return _show_once(request, app_key, plaintext, "rotated")
    app_key.refresh_from_db()
    return _app_key_page(request, app_key, form, status=400)


@require_GET
@key_admin_required
def app_key_revoke_confirm(request: HttpRequest, key_id: int) -> HttpResponse:
    """The confirmation step before revoking an app key."""
    app_key = get_object_or_404(AppKey, pk=key_id)
    return render(request, "keys/app_key_revoke.html", {"app_key": app_key, "form": ConfirmRevokeForm()})


@require_POST
@viewer_required
def app_key_revoke(request: HttpRequest, key_id: int) -> HttpResponse:
    """Revoke an app key at once, grace window included."""
    app_key = get_object_or_404(AppKey, pk=key_id)
    actor = _require_key_admin(request, Action.REVOKE, key=app_key)
    form = ConfirmRevokeForm(request.POST)
    if not form.is_valid():
        return render(request, "keys/app_key_revoke.html", {"app_key": app_key, "form": form}, status=400)
    try:
        lifecycle.revoke_issued_key(app_key, actor)
    except KeyActionError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Revoked {app_key}.")
    return redirect("keys-app-detail", key_id=app_key.pk)


# ---- audit log (key admins) ----------------------------------------------------------------------------

@require_GET
@key_admin_required
def audit_log(request: HttpRequest) -> HttpResponse:
    """The audit trail, filterable, 100 rows a page."""
    rows = audit.filtered(request.GET)
    page = Paginator(rows, 100).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        "page": page,
        "filters": request.GET,
        "query": query.urlencode(),
        "choices": _filter_choices(request.GET),
    }
    return render(request, "keys/audit.html", context)


def _filter_choices(params: QueryDict) -> list[tuple[str, str, list[tuple[str, str, bool]]]]:
    fields = {
        "action": AuditLog.Action,
        "outcome": AuditLog.Outcome,
        "key_type": AuditLog.KeyType,
        "via": AuditLog.Via,
    }
    return [
        (name, name.replace("_", " "), _options(kind.choices, params.get(name)))
        for name, kind in fields.items()
    ]


def _options(choices: list[tuple[str, str]], selected: str | None) -> list[tuple[str, str, bool]]:
    return [(value, label, value == selected) for value, label in choices]


@require_GET
@key_admin_required
def audit_csv(request: HttpRequest) -> StreamingHttpResponse:
    """The filtered audit trail as CSV."""
    rows = audit.filtered(request.GET).iterator(chunk_size=2000)
    response = StreamingHttpResponse(audit.csv_lines(rows), content_type="text/csv; charset=utf-8")
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response["Content-Disposition"] = f'attachment; filename="key-audit-{stamp}.csv"'
    return response
