from __future__ import annotations

from django.apps import AppConfig
from django.conf import settings


def export_recorded(sender: object, **kwargs: object) -> None:
    """Each stored batch to OpenTelemetry; the SDK is imported only once the export is on."""
    if not settings.OTEL_EXPORTER_OTLP_ENDPOINT:
        return
    from together_dash.metrics import otel

    otel.export_recorded(sender, **kwargs)


class MetricsConfig(AppConfig):
    name = "together_dash.metrics"
    label = "metrics"
    verbose_name = "Metrics"

    def ready(self) -> None:
        from together_dash.metrics import checks  # noqa: F401  (registers the system checks)
        from together_dash.traffic.signals import batch_recorded

        batch_recorded.connect(export_recorded, dispatch_uid="metrics.export_recorded")
