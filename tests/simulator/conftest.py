"""Clients for the simulator tests: the real SDKs and a raw httpx client, all against a fresh simulator."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest
import together

from together_dash.simulator.state import ORGANIZATION
from together_dash.simulator.testing import RunningSimulator

API_KEY = "sim-test-key"
PROJECT_ID = ORGANIZATION["project_id"]


@pytest.fixture
def sim(fresh_simulator: RunningSimulator) -> RunningSimulator:
    return fresh_simulator


@pytest.fixture
def openai_client(sim: RunningSimulator) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=sim.base_url, api_key=API_KEY, max_retries=0, timeout=10) as client:
        yield client


@pytest.fixture
def together_client(sim: RunningSimulator) -> Iterator[together.Together]:
    # together 3.x puts the version in each path (/v1/..., /v2/..., /v3/...): its base URL is the root.
    # Its project-scoped calls (models.list, endpoints) take the project from the client.
    with together.Together(
        base_url=sim.root_url, api_key=API_KEY, project_id=PROJECT_ID, max_retries=0, timeout=10
    ) as client:
        yield client


@pytest.fixture
def http(sim: RunningSimulator) -> Iterator[httpx.Client]:
    """Plain HTTP under /v1 (paths like "/files")."""
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=sim.base_url, headers=headers, timeout=10) as client:
        yield client


@pytest.fixture
def root_http(sim: RunningSimulator) -> Iterator[httpx.Client]:
    """Plain HTTP at the root, for versioned paths ("/v2/...", "/v3/...")."""
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=sim.root_url, headers=headers, timeout=10) as client:
        yield client
