"""generate_billing_usage: the report Together would send for generated traffic, and its reconciliation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command

from together_dash.billing.models import BillingDay, BillingLineItem, Organization, OrganizationKey
from together_dash.billing.reconciliation import reconcile
from together_dash.catalog.polling import poll_models
from together_dash.demo.billing_usage import BYPASS_SHARE, generate_billing_usage
from together_dash.demo.generator import generate_request_logs
from together_dash.pollers.testing import add_key
from together_dash.simulator import catalog
from together_dash.traffic.models import UsageHour

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 3, 3, 12, 30, tzinfo=UTC)


@pytest.fixture
def traffic(polled_simulator: object) -> None:
    add_key("catalog")
    poll_models()  # our prices: generated requests are costed as the proxy would cost them
    generate_request_logs(3000, days=2, keys=3, seed=7, now=NOW)


def test_every_finished_hour_is_billed_for_the_keys_organisation(traffic: None) -> None:
    result = generate_billing_usage(organizations=2, now=NOW)

    assert result.organizations == 2 and result.line_items == BillingLineItem.objects.count() > 0
    assert set(OrganizationKey.objects.values_list("organization__organization_id", flat=True)) == {
        "org_generated_1", "org_generated_2",
    }
    starts = set(BillingLineItem.objects.values_list("start_time", flat=True))
    assert max(starts) == NOW.replace(minute=0) - timedelta(hours=1)  # the running hour is not billed
    assert Organization.objects.filter(last_polled_at=NOW).count() == 2
    assert BillingDay.objects.exists()


def test_a_second_run_keeps_what_the_first_stored(traffic: None) -> None:
    generate_billing_usage(now=NOW)
    before = list(BillingLineItem.objects.values_list("id", "identity").order_by("id"))

    out = StringIO()
    call_command("generate_billing_usage", stdout=out)  # now: the hour that was running is finished too

    assert "organisation(s)" in out.getvalue()
    after = list(BillingLineItem.objects.values_list("id", "identity").order_by("id"))
    assert after[: len(before)] == before and len(after) > len(before)


def test_reconciling_it_names_the_bypassed_model_and_the_endpoint_minutes(traffic: None) -> None:
    generate_billing_usage(organizations=1, now=NOW)

    found = reconcile(NOW - timedelta(days=2), NOW, "day")

    causes = {row.cause for row in found.rows}
    assert {"bypassed", "not_per_request", "not_billed_yet"} <= causes
    busiest = max(
        {row.model for row in found.rows if row.cause == "bypassed"},
        key=lambda model: sum(UsageHour.objects.filter(model=model).values_list("prompt_tokens", flat=True)),
    )
    assert busiest in catalog.BY_ID
    bypassed = [row for row in found.rows if row.model == busiest and row.cause == "bypassed"]
    billed = sum(row.billed.input_tokens for row in bypassed)
    share = billed / sum(row.observed.prompt_tokens for row in bypassed)
    assert abs(Decimal(share) - 1 - BYPASS_SHARE) < Decimal("0.01")
    minutes = {row.start: row.cause for row in found.rows if row.charge == "dedicated endpoint"}
    today = NOW.replace(hour=0, minute=0)
    assert minutes[today - timedelta(days=1)] == "not_per_request"
    assert minutes[today] == "not_billed_yet"  # the day has not finished: its window is not on a report
