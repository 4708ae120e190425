from __future__ import annotations

from django.apps import AppConfig


class ProxyConfig(AppConfig):
    name = "together_dash.proxy"
    label = "proxy"
    verbose_name = "Proxy"
