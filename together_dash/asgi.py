"""ASGI entry point: the Django dashboard (and, at /v1/, the proxy)."""
from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "together_dash.settings")

application = get_asgi_application()
