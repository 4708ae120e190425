"""Shared fixtures. Every test runs on the embedded defaults unless DATABASE_URL / CELERY_BROKER_URL say otherwise."""
from __future__ import annotations

import os
import tempfile

# Tests keep their generated secrets and broker folders out of the developer's ./var.
os.environ.setdefault("TOGETHER_DASH_VAR_DIR", tempfile.mkdtemp(prefix="together-dash-test-"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "together_dash.settings")
