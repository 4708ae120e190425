"""ASGI entry point: the proxy at /v1/ and the Django dashboard everywhere else, in one server."""
from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "together_dash.settings")

django_application = get_asgi_application()  # sets Django up, so the proxy can import models below

from together_dash.proxy.app import Proxy  # noqa: E402
from together_dash.proxy.dispatch import Dispatcher  # noqa: E402

proxy = Proxy()
application = Dispatcher(django_application, proxy)
