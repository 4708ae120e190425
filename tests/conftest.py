"""Shared fixtures. Tests run on the embedded defaults unless DATABASE_URL or CELERY_BROKER_URL say so."""
from __future__ import annotations

import os
import tempfile

# Tests keep their generated secrets and broker folders out of the developer's ./var.
os.environ.setdefault("TOGETHER_DASH_VAR_DIR", tempfile.mkdtemp(prefix="together-dash-test-"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "together_dash.settings")


# --- the Together API simulator (together_dash/simulator/testing.py) --------------------------------
from collections.abc import Iterator  # noqa: E402

import pytest  # noqa: E402

from together_dash.simulator.testing import RunningSimulator, run_simulator  # noqa: E402


@pytest.fixture(scope="session")
def simulator() -> Iterator[RunningSimulator]:
    """One simulator for the whole session, on a free loopback port: `simulator.base_url` ends in /v1."""
    with run_simulator() as running:
        yield running


@pytest.fixture
def fresh_simulator(simulator: RunningSimulator) -> RunningSimulator:
    """The session simulator, reset: no files, jobs or batches, default scenario, clock running."""
    simulator.reset()
    return simulator


@pytest.fixture
def polled_simulator(fresh_simulator: RunningSimulator, settings: object) -> RunningSimulator:
    """The fresh simulator as the pollers' upstream: TOGETHER_BASE_URL points at it, prices re-read."""
    from together_dash.catalog.pricing import invalidate_prices

    settings.TOGETHER_BASE_URL = fresh_simulator.base_url
    invalidate_prices()
    return fresh_simulator


@pytest.fixture(autouse=True)
def _empty_cache() -> Iterator[None]:
    """Each test starts with an empty cache: with CACHE_URL on Redis (CI) entries outlive a test."""
    from django.core.cache import cache

    cache.clear()
    yield
