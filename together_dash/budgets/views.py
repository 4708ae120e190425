"""/budgets/: every budget with its spend so far; key admins create, edit and delete them (POST only)."""
from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from together_dash.budgets.forms import BudgetForm, DeleteBudgetForm
from together_dash.budgets.models import Budget
from together_dash.budgets.spend import budget_statuses
from together_dash.core.roles import is_key_admin, key_admin_required, viewer_required


@require_GET
@viewer_required
def budget_list(request: HttpRequest) -> HttpResponse:
    context = {"statuses": budget_statuses(), "can_act": is_key_admin(request.user)}
    return render(request, "budgets/list.html", context)


@require_http_methods(["GET", "POST"])
@key_admin_required
def budget_new(request: HttpRequest) -> HttpResponse:
    form = BudgetForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        budget = form.save(commit=False)
        budget.created_by = request.user
        budget.save()
        messages.success(request, f"Budget {budget.name} created.")
        return redirect("budgets-list")
    status = 400 if request.method == "POST" else 200
    return render(request, "budgets/form.html", {"form": form, "budget": None}, status=status)


@require_http_methods(["GET", "POST"])
@key_admin_required
def budget_edit(request: HttpRequest, budget_id: int) -> HttpResponse:
    budget = get_object_or_404(Budget, pk=budget_id)
    form = BudgetForm(request.POST or None, instance=budget)
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, f"Budget {budget.name} saved.")
        return redirect("budgets-list")
    status = 400 if request.method == "POST" else 200
    context = {"form": form, "budget": budget, "delete_form": DeleteBudgetForm()}
    return render(request, "budgets/form.html", context, status=status)


@require_POST
@key_admin_required
def budget_delete(request: HttpRequest, budget_id: int) -> HttpResponse:
    budget = get_object_or_404(Budget, pk=budget_id)
    form = DeleteBudgetForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Tick the box to delete the budget.")
        return redirect("budgets-edit", budget_id=budget.pk)
    budget.delete()
    messages.success(request, f"Budget {budget.name} deleted.")
    return redirect("budgets-list")
