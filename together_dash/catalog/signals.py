"""What the catalog announces to the apps that read it (traffic listens; the catalog never imports it)."""
from __future__ import annotations

from django.dispatch import Signal

# Sent by a catalog poll that added, changed, removed or restored a model, once its rows are written:
# request costs logged as unknown may now be known (traffic backfills them).
catalog_changed = Signal()
