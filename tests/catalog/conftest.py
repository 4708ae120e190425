"""Fixtures for the catalog tests: the session's Together simulator, reset for every test."""

from __future__ import annotations

import pytest

from together_dash.simulator.testing import RunningSimulator


@pytest.fixture
def together(polled_simulator: RunningSimulator) -> RunningSimulator:
    """The simulator with nothing in it and its clock running, TOGETHER_BASE_URL pointing at it."""
    return polled_simulator
