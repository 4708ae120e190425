"""System checks of the proxy's own settings."""
from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, register

# The upstream transports proxy/transport.py's proxy_transport() builds, by PROXY_UPSTREAM_TRANSPORT.
UPSTREAM_TRANSPORTS = ("lean", "aiohttp", "httpx")


@register()
def check_upstream_transport(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """PROXY_UPSTREAM_TRANSPORT names a transport the proxy has."""
    if settings.PROXY_UPSTREAM_TRANSPORT in UPSTREAM_TRANSPORTS:
        return []
    return [
        Error(
            f"PROXY_UPSTREAM_TRANSPORT must be one of {', '.join(UPSTREAM_TRANSPORTS)}, "
            f"got {settings.PROXY_UPSTREAM_TRANSPORT!r}.",
            id="together_dash.E005",
        )
    ]
