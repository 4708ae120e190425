"""The credit runway page: the estimate, the balances entered so far, and the form key admins enter one
with. The overview shows the same estimate in its runway panel (billing.runway is the one reader)."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from together_dash.billing import balances, runway
from together_dash.billing.balances import BalanceError, CreditBalanceForm
from together_dash.billing.models import CreditBalance
from together_dash.core.roles import is_key_admin, viewer_required
from together_dash.keys.audit import Actor

HISTORY_SHOWN = 50


def runway_context(request: HttpRequest) -> dict[str, Any]:
    """What the runway panel needs, on the overview and on its own page."""
    return {"runways": runway.current_runways(), "can_enter_balance": is_key_admin(request.user)}


@require_GET
@viewer_required
def runway_page(request: HttpRequest) -> HttpResponse:
    """The runway estimate, the balance history and, for key admins, the form."""
    now = timezone.localtime().replace(second=0, microsecond=0)
    form = CreditBalanceForm(initial={"as_of": now}) if is_key_admin(request.user) else None
    return _page(request, form)


@require_POST
@viewer_required
def enter_balance(request: HttpRequest) -> HttpResponse:
    """Store a balance entry; a viewer's attempt is audited as a failure, then refused."""
    actor = Actor.from_request(request)
    if not is_key_admin(request.user):
        balances.record_refusal(actor, "refused: not a key admin")
        raise PermissionDenied("Only key admins can enter the credit balance.")
    form = CreditBalanceForm(request.POST)
    if form.is_valid():
        data = form.cleaned_data
        try:
            organization = data.get("organization")
            balance = balances.enter_balance(data["balance_usd"], data["as_of"], actor, organization)
        except BalanceError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Recorded {balance}. The runway counts spend from then on.")
            return redirect("dashboard-runway")
    return _page(request, form, status=400)


def _page(request: HttpRequest, form: CreditBalanceForm | None, status: int = 200) -> HttpResponse:
    history = CreditBalance.objects.select_related("organization")[:HISTORY_SHOWN]
    context = runway_context(request)
    applied = {found.balance.pk for found in context["runways"] if found.balance}
    context.update(form=form, history=history, applied=applied)
    return render(request, "dashboard/runway.html", context, status=status)
