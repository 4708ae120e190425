"""System checks of the OpenTelemetry export's settings."""
from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import Error, register


@register()
def check_otel_endpoint(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """OTEL_EXPORTER_OTLP_ENDPOINT, when set, is the http(s) base URL of an OTLP/HTTP collector."""
    endpoint = settings.OTEL_EXPORTER_OTLP_ENDPOINT
    if not endpoint:
        return []
    try:
        parts = urlsplit(endpoint)
        usable = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a port that is not a number
        usable = False
    if usable:
        return []
    return [
        Error(
            f"OTEL_EXPORTER_OTLP_ENDPOINT={endpoint!r} is not an http(s) URL: nothing can be exported to it.",
            hint="Give the collector's OTLP/HTTP base URL, e.g. http://otel-collector:4318 (the proxy adds "
            "/v1/traces and /v1/metrics), or unset it to turn the export off.",
            id="together_dash.metrics.E001",
        )
    ]
