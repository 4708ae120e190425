"""Fixtures for the poller tests: the session's Together simulator, reset for every test."""

from __future__ import annotations

import pytest

from together_dash.catalog.pricing import invalidate_prices
from together_dash.simulator.testing import RunningSimulator


@pytest.fixture
def together(simulator: RunningSimulator, settings: object) -> RunningSimulator:
    """The simulator with nothing in it and its clock running, TOGETHER_BASE_URL pointing at it."""
    simulator.reset()
    settings.TOGETHER_BASE_URL = simulator.base_url
    invalidate_prices()
    return simulator
