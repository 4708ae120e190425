"""/budgets/: viewers read every budget with its spend; key admins create, edit and delete them."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
import time_machine
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from tests.budgets.conftest import PRICED, UNPRICED, app_key, logged_in, spend, upstream
from together_dash.budgets.models import Budget

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 7, 20, 15, 0, tzinfo=UTC)


@pytest.fixture
def admin_web(key_admin: User) -> Client:
    return logged_in(key_admin)


def row_of(page: str, name: str) -> str:
    start = page.index(f'data-budget="{name}"')
    return page[start:page.index("</tr>", start)]


@time_machine.travel(NOW, tick=False)
def test_viewers_see_each_budget_with_spend_share_reset_and_enforcement(
    viewer_web: Client, catalog: None
) -> None:
    key = upstream("prod")
    web = app_key("web", key)
    Budget.objects.create(name="web-daily", scope="app_key", app_key=web, period="day",
                          amount_usd=Decimal("2"), enforce=True)
    Budget.objects.create(name="llama-monthly", scope="model", model=PRICED, amount_usd=Decimal("100"))
    spend("2.50", key=key, app=web)

    page = viewer_web.get(reverse("budgets-list")).content.decode()

    daily = row_of(page, "web-daily")
    assert "$2.50" in daily and "$2.00" in daily and "125.0%" in daily
    assert 'value="100"' in daily and "over" in daily  # the bar stops at full
    assert "enforced" in daily and "the proxy refuses the key (429)" in daily
    assert "2026-07-21 00:00 UTC" in daily
    monthly = row_of(page, "llama-monthly")
    assert "2.5%" in monthly and "2026-08-01 00:00 UTC" in monthly and ">no<" in monthly
    assert reverse("budgets-new") not in page  # no actions for viewers
    assert web.prefix in page and "secret" not in page.lower()


@time_machine.travel(NOW, tick=False)
def test_unpriced_spend_shows_as_at_least_with_its_badge_never_as_zero(
    viewer_web: Client, catalog: None
) -> None:
    key = upstream("prod")
    Budget.objects.create(name="prod-monthly", scope="upstream_key", upstream_key=key,
                          amount_usd=Decimal("10"))
    spend("1", key=key)
    spend("1", key=key, model=UNPRICED)

    lab = upstream("lab")
    Budget.objects.create(name="lab-monthly", scope="upstream_key", upstream_key=lab,
                          amount_usd=Decimal("10"))
    spend("1", key=lab, model=UNPRICED)

    page = viewer_web.get(reverse("budgets-list")).content.decode()
    mixed, unpriced_only = row_of(page, "prod-monthly"), row_of(page, "lab-monthly")
    assert "at least $1.00" in mixed and "1 unpriced" in mixed and "≥ 10.0%" in mixed
    assert "unknown" in unpriced_only and "1 unpriced" in unpriced_only and "$0.00" not in unpriced_only


def test_the_page_needs_a_role_and_the_forms_need_a_key_admin(
    viewer_web: Client, nobody_web: Client, catalog: None
) -> None:
    budget = Budget.objects.create(name="b", scope="model", model=PRICED, amount_usd=Decimal("1"))
    anonymous = Client()

    assert anonymous.get(reverse("budgets-list")).status_code == 302
    assert nobody_web.get(reverse("budgets-list")).status_code == 403
    assert viewer_web.get(reverse("budgets-list")).status_code == 200
    assert viewer_web.get(reverse("budgets-new")).status_code == 403
    assert viewer_web.post(reverse("budgets-new"), {"name": "x"}).status_code == 403
    assert viewer_web.post(reverse("budgets-delete", args=[budget.pk]), {"confirm": "on"}).status_code == 403
    assert Budget.objects.filter(pk=budget.pk).exists()


def test_a_key_admin_creates_edits_and_deletes_a_budget(admin_web: Client, catalog: None) -> None:
    web = app_key("web", upstream("prod"))
    form = {"name": "web-daily", "scope": "app_key", "app_key": web.pk, "period": "day",
            "amount_usd": "12.50", "thresholds": "50, 90,100", "enforce": "on"}

    assert admin_web.post(reverse("budgets-new"), form).status_code == 302
    budget = Budget.objects.get()
    assert (budget.app_key, budget.amount_usd, budget.thresholds, budget.enforce) == (
        web, Decimal("12.50"), [50, 90, 100], True
    )
    assert "web-daily" in admin_web.get(reverse("budgets-list")).content.decode()

    edit = admin_web.get(reverse("budgets-edit", args=[budget.pk])).content.decode()
    assert 'value="50, 90, 100"' in edit
    response = admin_web.post(reverse("budgets-edit", args=[budget.pk]), {**form, "amount_usd": "20"})
    assert response.status_code == 302
    budget.refresh_from_db()
    assert budget.amount_usd == Decimal("20")

    assert admin_web.post(reverse("budgets-delete", args=[budget.pk])).status_code == 302  # unconfirmed
    assert Budget.objects.exists()
    admin_web.post(reverse("budgets-delete", args=[budget.pk]), {"confirm": "on"})
    assert not Budget.objects.exists()


def test_bad_input_is_answered_with_the_reason_and_the_form_kept(admin_web: Client, catalog: None) -> None:
    key = upstream("prod")
    form = {"name": "bad", "scope": "upstream_key", "upstream_key": key.pk, "period": "month",
            "amount_usd": "-3", "thresholds": "80, lots", "enforce": "on"}

    response = admin_web.post(reverse("budgets-new"), form)

    page = response.content.decode()
    assert response.status_code == 400
    assert "&#x27;lots&#x27; is not a whole percentage" in page
    assert "Only app-key budgets can be enforced" in page
    assert "greater than or equal to" in page  # the amount
    assert 'value="bad"' in page  # what was typed is kept
    assert not Budget.objects.exists()
