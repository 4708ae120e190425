"""Line items stored before there were day summaries get their summaries from the migration."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection

from tests.billing.conftest import Biller
from tests.billing.test_poll_billing import CALLS_AT, POLL_AT, day_sums, item_sums
from tests.migrating import migrate, migrate_to_latest
from together_dash.billing.models import BillingDay
from together_dash.pollers.testing import add_key

pytestmark = pytest.mark.django_db(transaction=True)




def test_items_stored_before_the_day_summaries_are_summarized(biller: Biller) -> None:
    _, secret = add_key("main")
    for hour in (0, 20):  # two UTC days
        biller.at(CALLS_AT + timedelta(hours=hour))
        biller.chat(secret)
    biller.poll(POLL_AT + timedelta(hours=20))
    expected = day_sums()
    assert expected == item_sums() and len({day for day, _, _ in expected}) == 2

    migrate(("billing", "0001_initial"))
    assert "billing_billingday" not in connection.introspection.table_names()
    migrate_to_latest()

    assert day_sums() == expected
    assert BillingDay.objects.count() == 2  # one model on each of the two days
