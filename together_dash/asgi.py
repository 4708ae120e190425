"""ASGI entry point: the proxy at /v1/ and the Django dashboard everywhere else, in one server."""
from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "together_dash.settings")

from django.conf import settings  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402

from together_dash.core import metrics_dir  # noqa: E402

# Before anything imports prometheus_client, which picks its mode on import: every web and proxy process
# writes its series to one folder, so a scrape of any of them counts them all.
metrics_dir.share_between_processes(settings.METRICS_MULTIPROC_DIR)

django_application = get_asgi_application()  # sets Django up, so the proxy can import models below

from together_dash.proxy.app import Proxy  # noqa: E402
from together_dash.proxy.dispatch import Dispatcher  # noqa: E402

after_stop = None
if settings.OTEL_EXPORTER_OTLP_ENDPOINT:
    from together_dash.metrics import otel  # noqa: E402

    otel.telemetry()  # this process's exporters, started now rather than on the first request
    after_stop = otel.reset  # at shutdown, the spans of the last logs go out (within a few seconds)

proxy = Proxy(after_stop=after_stop)
application = Dispatcher(django_application, proxy)
