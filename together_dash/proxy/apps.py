from __future__ import annotations

from django.apps import AppConfig


class ProxyConfig(AppConfig):
    name = "together_dash.proxy"
    label = "proxy"
    verbose_name = "Proxy"

    def ready(self) -> None:
        from together_dash.proxy import checks  # noqa: F401 - registers the system checks
