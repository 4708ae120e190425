"""Rate-limit snapshots moved from the pollers app to the keys app with their rows."""

from __future__ import annotations

import pytest
from django.db import connection

from tests.migrating import migrate, migrate_to_latest
from together_dash.keys.models import RateLimitSnapshot, TogetherKey
from together_dash.pollers.testing import new_secret

pytestmark = pytest.mark.django_db(transaction=True)




def test_snapshots_taken_before_the_move_are_still_there() -> None:
    key = TogetherKey.create(name="main", secret=new_secret())
    migrate(("keys", "0002_audit_log_and_upstream_grace"), ("pollers", "0001_initial"))
    assert "pollers_ratelimitsnapshot" in connection.introspection.table_names()
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO pollers_ratelimitsnapshot (key_id, model, taken_at, source, headroom_pct)"
            " VALUES (%s, 'm', CURRENT_TIMESTAMP, 'probe', 42.0)",
            [key.pk],
        )

    migrate_to_latest()

    assert "pollers_ratelimitsnapshot" not in connection.introspection.table_names()
    assert list(RateLimitSnapshot.objects.values_list("key__name", "headroom_pct")) == [("main", 42.0)]
