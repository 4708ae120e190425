"""Line items stored before there were day summaries get their summaries from the migration."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from tests.billing.conftest import Biller
from tests.billing.test_poll_billing import CALLS_AT, POLL_AT, day_sums, item_sums
from together_dash.billing.models import BillingDay
from together_dash.pollers.testing import add_key

pytestmark = pytest.mark.django_db(transaction=True)


def _migrate(*targets: tuple[str, str]) -> None:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(list(targets))


def _migrate_to_latest() -> None:
    """Every app forward again: going back also took back the migrations that depend on the old one."""
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


def test_items_stored_before_the_day_summaries_are_summarized(biller: Biller) -> None:
    _, secret = add_key("main")
    for hour in (0, 20):  # two UTC days
        biller.at(CALLS_AT + timedelta(hours=hour))
        biller.chat(secret)
    biller.poll(POLL_AT + timedelta(hours=20))
    expected = day_sums()
    assert expected == item_sums() and len({day for day, _, _ in expected}) == 2

    _migrate(("billing", "0001_initial"))
    assert "billing_billingday" not in connection.introspection.table_names()
    _migrate_to_latest()

    assert day_sums() == expected
    assert BillingDay.objects.count() == 4
