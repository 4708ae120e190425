from __future__ import annotations

from typing import Any

from django.apps import AppConfig


class TrafficConfig(AppConfig):
    name = "together_dash.traffic"
    label = "traffic"
    verbose_name = "Traffic"

    def ready(self) -> None:
        from together_dash.catalog.signals import catalog_changed

        catalog_changed.connect(_prices_may_have_arrived, dispatch_uid="traffic-backfill-costs")


def _prices_may_have_arrived(sender: type, **kwargs: Any) -> None:
    """The catalog changed: costs logged as unknown may be known now, so a backfill runs soon."""
    from together_dash.traffic.tasks import backfill_costs

    backfill_costs.delay()
