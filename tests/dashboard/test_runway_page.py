"""The credit runway on the overview and its own page: the panel's figures, the no-balance and
zero-crossing states, the admin-only balance form and its validation, and GET /api/billing/runway."""

from __future__ import annotations

import html
import io
from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from together_dash.billing.balances import enter_balance
from together_dash.billing.models import CreditBalance
from together_dash.keys.audit import Actor
from together_dash.keys.models import AuditLog

from .conftest import LLAMA, Seed, logged_in

pytestmark = pytest.mark.django_db

MILLION = {"prompt_tokens": 1_000_000, "completion_tokens": 0, "total_tokens": 1_000_000}  # $0.88 each


def text(response: object) -> str:
    return html.unescape(response.content.decode())


def panel(page: str) -> str:
    start = page.index('id="runway"')
    return page[start: page.index("</section>", start)]


@pytest.fixture
def spending(seed: Seed) -> Seed:
    """$4.40 spent in the last hour: five requests of a million prompt tokens at $0.88 per million."""
    seed.model(LLAMA)
    seed.logs(seed.key(), LLAMA, timedelta(minutes=30), 5, **MILLION)
    return seed


@pytest.fixture
def admin_web(key_admin: User) -> Client:
    return logged_in(key_admin)


def balance(amount: str, hours_ago: float = 2) -> CreditBalance:
    return enter_balance(Decimal(amount), timezone.now() - timedelta(hours=hours_ago), Actor())


def post_balance(web: Client, amount: str, as_of: str | None = None) -> object:
    moment = as_of or (timezone.localtime() - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M")
    return web.post(reverse("dashboard-runway-balance"), {"balance_usd": amount, "as_of": moment})


# ---- the panel ---------------------------------------------------------------------------------

def test_the_overview_panel_shows_spend_balance_left_burn_rate_and_hours_left(
    viewer_web: Client, spending: Seed
) -> None:
    balance("10.00")

    shown = panel(text(viewer_web.get(reverse("dashboard-overview"))))

    assert "Credit runway" in shown and "estimate" in shown
    assert "$10.00 as of" in shown
    assert "$4.40" in shown and "$0.00 billed by Together" in shown and "$4.40 observed here" in shown
    assert "$5.60" in shown  # left
    assert "$0.18 per hour" in shown  # $4.40 / 24
    assert "30.5 hours" in shown  # $5.60 / ($4.40 / 24)
    assert "at or below zero" not in shown and "at most" not in shown


def test_without_a_balance_the_panel_shows_the_burn_rate_and_admins_get_a_link(
    viewer_web: Client, admin_web: Client, spending: Seed
) -> None:
    for_viewer = panel(text(viewer_web.get(reverse("dashboard-overview"))))
    for_admin = panel(text(admin_web.get(reverse("dashboard-overview"))))

    assert "$0.18 per hour" in for_viewer and "$4.40 in 24 hours" in for_viewer
    assert "No balance entered" in for_viewer and "Hours left" not in for_viewer
    assert "A key admin can enter it." in for_viewer and "Enter the balance" not in for_viewer
    assert f'<a href="{reverse("dashboard-runway")}">Enter the balance</a>' in for_admin


def test_at_or_below_zero_the_panel_says_so_and_names_402(viewer_web: Client, spending: Seed) -> None:
    spending.logs(None, LLAMA, timedelta(minutes=5), 2, kind="insufficient_credits")
    balance("4.00")

    shown = panel(text(viewer_web.get(reverse("dashboard-overview"))))

    assert "The estimated balance is at or below zero (-$0.40)" in shown
    assert "HTTP 402" in shown and "2 requests got a 402 in the last 24 hours" in shown
    assert "Hours left at that rate</dt>\n      <dd data-value=\"hours\">none" in shown


def test_unpriced_requests_are_named_and_make_the_figures_bounds(viewer_web: Client, spending: Seed) -> None:
    spending.logs(None, "nobody/unpriced-model", timedelta(minutes=5), 3)
    balance("10.00")

    shown = panel(text(viewer_web.get(reverse("dashboard-overview"))))

    assert "at least $4.40" in shown and "at most $5.60" in shown and "at most 30.5 hours" in shown
    assert "3 requests since the balance's date and 3 in the last 24 hours" in shown
    assert "spend is a lower bound" in shown


# ---- the page and the form --------------------------------------------------------------------

def test_a_key_admin_records_a_balance_and_it_is_audited(admin_web: Client, spending: Seed) -> None:
    response = post_balance(admin_web, "25.50", "2026-03-10T08:30")

    assert response.status_code == 302 and response["Location"] == reverse("dashboard-runway")
    stored = CreditBalance.objects.get()
    assert stored.balance_usd == Decimal("25.50") and stored.as_of.isoformat() == "2026-03-10T08:30:00+00:00"
    assert (stored.entered_by.username, stored.via, stored.organization) == ("kim-admin", "web", None)
    entry = AuditLog.objects.get()
    assert (entry.key_type, entry.key_id, entry.outcome) == ("credit", stored.pk, "success")
    assert (entry.username, entry.source_address) == ("kim-admin", "127.0.0.1")
    page = text(admin_web.get(reverse("dashboard-runway")))
    assert "Recorded $25.50 as of 2026-03-10 08:30" in page and "applies" in page
    assert "Credit balance" in text(admin_web.get(reverse("keys-audit")))


@pytest.mark.parametrize(
    ("amount", "as_of", "message"),
    [
        ("-5", None, "The balance cannot be negative"),
        ("twelve", None, "'twelve' is not a number"),
        ("$1,200", None, "is not a number"),
        ("1.234", None, "at most two decimal places"),
        ("", None, "This field is required."),
        ("10", "2999-01-01T00:00", "The balance's date is in the future"),
        ("10", "yesterday", "Enter a valid date/time."),
    ],
)
def test_the_form_explains_bad_input_and_stores_nothing(
    admin_web: Client, db: None, amount: str, as_of: str | None, message: str
) -> None:
    response = post_balance(admin_web, amount, as_of)

    assert response.status_code == 400
    assert message in text(response)
    assert not CreditBalance.objects.exists() and not AuditLog.objects.exists()


def test_the_form_keeps_what_was_typed_when_it_refuses_it(admin_web: Client, db: None) -> None:
    page = text(post_balance(admin_web, "-5", "2026-03-10T08:30"))

    assert 'value="-5"' in page and 'value="2026-03-10T08:30"' in page


def test_only_key_admins_get_the_form_and_a_viewers_attempt_is_refused_and_audited(
    viewer_web: Client, nobody_web: Client, client: Client, admin_web: Client, db: None
) -> None:
    assert "Record the balance" in text(admin_web.get(reverse("dashboard-runway")))
    page = viewer_web.get(reverse("dashboard-runway"))
    assert page.status_code == 200 and "Record the balance" not in text(page)

    assert post_balance(viewer_web, "10").status_code == 403
    assert nobody_web.get(reverse("dashboard-runway")).status_code == 403
    assert post_balance(nobody_web, "10").status_code == 403
    for response in (client.get(reverse("dashboard-runway")), post_balance(client, "10")):
        assert response.status_code == 302 and response["Location"].startswith(reverse("login"))

    assert not CreditBalance.objects.exists()
    refused = AuditLog.objects.get(username="vic-viewer")
    assert (refused.key_type, refused.outcome) == ("credit", "failure")
    assert refused.detail == "refused: not a key admin"


def test_the_page_lists_every_balance_entered_and_marks_the_one_that_applies(
    viewer_web: Client, db: None
) -> None:
    older = balance("100.00", hours_ago=48)
    newer = balance("80.00", hours_ago=72)  # entered later, about an earlier moment: it applies all the same

    page = text(viewer_web.get(reverse("dashboard-runway")))

    history = page[page.index('id="balance-history"'):]
    assert history.index("$80.00") < history.index("$100.00")
    assert history.count('class="applies"') == 1
    assert '<tr class="applies">\n        <td>$80.00' in history
    assert CreditBalance.objects.count() == 2 and older.pk != newer.pk


# ---- the API ----------------------------------------------------------------------------------

@pytest.fixture
def token(db: None) -> str:
    out = io.StringIO()
    call_command("create_api_token", "grafana", stdout=out, stderr=io.StringIO())
    return out.getvalue().strip()


def test_the_api_gives_the_same_estimate_as_the_panel(viewer_web: Client, token: str, spending: Seed) -> None:
    entered = balance("10.00")

    by_session = viewer_web.get("/api/billing/runway")
    by_token = Client().get("/api/billing/runway", HTTP_AUTHORIZATION=f"Bearer {token}")

    assert by_session.status_code == by_token.status_code == 200
    [found] = by_token.json()["runways"]
    assert found["scope"] == "account" and found["organization_id"] is None and found["estimate"] is True
    assert Decimal(found["balance"]["balance_usd"]) == Decimal("10.00")
    assert found["balance"]["as_of"].startswith(entered.as_of.isoformat()[:19])
    since = found["spend_since_balance"]
    assert Decimal(since["total_usd"]) == Decimal(since["observed_usd"]) == Decimal("4.40")
    assert Decimal(since["billed_usd"]) == 0 and since["billed_from"] is None
    assert Decimal(found["estimated_balance_usd"]) == Decimal("5.60")
    assert Decimal(found["burn_per_hour_usd"]) == (Decimal("4.40") / 24).quantize(Decimal("1e-8"))
    assert Decimal(found["hours_left"]) == Decimal("30.5")
    assert found["exhausted"] is False and found["lower_bound"] is False and found["burn_window_hours"] == 24


def test_the_api_without_a_balance_and_without_credentials(
    client: Client, token: str, spending: Seed
) -> None:
    assert client.get("/api/billing/runway").status_code == 401

    [found] = client.get("/api/billing/runway", HTTP_AUTHORIZATION=f"Bearer {token}").json()["runways"]

    assert found["balance"] is None and found["spend_since_balance"] is None
    assert found["hours_left"] is None and found["estimated_balance_usd"] is None
    assert Decimal(found["burn"]["total_usd"]) == Decimal("4.40")


def test_the_admin_lists_balances_but_neither_adds_nor_deletes_them(db: None, fast_passwords: None) -> None:
    web = logged_in(User.objects.create_superuser("root", password="not used here"))
    entered = balance("12.00")

    listing = web.get(reverse("admin:billing_creditbalance_changelist"))

    assert listing.status_code == 200 and "12.00" in text(listing)
    assert web.get(reverse("admin:billing_creditbalance_add")).status_code == 403
    delete = reverse("admin:billing_creditbalance_delete", args=[entered.pk])
    assert web.post(delete, {"post": "yes"}).status_code == 403
    assert CreditBalance.objects.filter(pk=entered.pk).exists()
