"""The proxy in front of the session simulator, and an app key for it (a module may define its own)."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from together_dash.keys.models import TogetherKey
from together_dash.keys.services import create_app_key
from together_dash.proxy.testing import RunningProxy, running_proxy
from together_dash.simulator.testing import RunningSimulator

UPSTREAM_SECRET = "sim-upstream-key-for-proxy-tests"


@pytest.fixture
def proxy(transactional_db: None, fresh_simulator: RunningSimulator) -> Iterator[RunningProxy]:
    with running_proxy(fresh_simulator.base_url) as running:
        yield running


@pytest.fixture
def app_key(transactional_db: None) -> str:
    TogetherKey.create(name="main", secret=UPSTREAM_SECRET)
    return create_app_key("proxy-tests")[1]
