from __future__ import annotations

from django.apps import AppConfig


class KeysConfig(AppConfig):
    name = "together_dash.keys"
    label = "keys"
    verbose_name = "Keys"
