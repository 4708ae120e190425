from __future__ import annotations

from django.apps import AppConfig


class BudgetsConfig(AppConfig):
    name = "together_dash.budgets"
    label = "budgets"
    verbose_name = "Spend budgets"

    def ready(self) -> None:
        from together_dash.budgets.counters import on_batch_recorded
        from together_dash.traffic.signals import batch_recorded

        # Every committed batch adds its app-key cost to the shared counters the proxy enforces with.
        batch_recorded.connect(on_batch_recorded, dispatch_uid="budgets.spend_counters")
