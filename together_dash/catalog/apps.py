from __future__ import annotations

from typing import Any

from django.apps import AppConfig


class CatalogConfig(AppConfig):
    name = "together_dash.catalog"
    label = "catalog"
    verbose_name = "Model catalog"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from together_dash.catalog.models import ModelInfo

        # Any write of a model row, the poller's or anyone's, makes every process re-read the prices.
        post_save.connect(_model_written, sender=ModelInfo, dispatch_uid="catalog-version-save")
        post_delete.connect(_model_written, sender=ModelInfo, dispatch_uid="catalog-version-delete")


def _model_written(sender: type, **kwargs: Any) -> None:
    from together_dash.catalog.models import CatalogVersion

    CatalogVersion.bump()
