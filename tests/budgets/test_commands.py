"""add_budget, list_budgets and remove_budget, in the style of the alert channel commands."""

from __future__ import annotations

from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from tests.budgets.conftest import app_key, spend, upstream
from together_dash.budgets.models import Budget

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_add_list_and_remove_a_budget(catalog: None) -> None:
    key = upstream("prod")
    web = app_key("web", key)

    said = run("add_budget", "web-daily", "app_key", web.prefix, "12.5", "--period", "day", "--enforce")
    assert "Added budget web-daily: app key web" in said and "enforced at the proxy" in said
    budget = Budget.objects.get()
    assert (budget.app_key, budget.amount_usd, budget.thresholds, budget.enforce) == (
        web, Decimal("12.5"), [80, 100], True
    )
    spend("3.125", key=key, app=web)

    listed = run("list_budgets")
    assert "web-daily\tapp key web" in listed and "$3.13 of $12.50 (25.0%)" in listed and "enforced" in listed

    assert "Removed budget web-daily" in run("remove_budget", "web-daily")
    assert not Budget.objects.exists()
    assert "No budgets" in run("list_budgets")


def test_bad_input_is_a_clear_error_and_stores_nothing(catalog: None) -> None:
    upstream("prod")
    with pytest.raises(CommandError, match="not an amount in USD"):
        run("add_budget", "b", "upstream_key", "prod", "ten")
    with pytest.raises(CommandError, match="No single app key 'ghost'"):
        run("add_budget", "b", "app_key", "ghost", "10")
    with pytest.raises(CommandError, match="Only app-key budgets can be enforced"):
        run("add_budget", "b", "model", "m", "10", "--enforce")
    with pytest.raises(CommandError, match="No budget named 'b'"):
        run("remove_budget", "b")
    assert not Budget.objects.exists()
