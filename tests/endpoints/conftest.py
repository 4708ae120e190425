"""Fixtures for the endpoint tests: the session's simulator as the pollers' upstream, its clock frozen and
moved with ours, endpoints created on it over HTTP, and traffic to them through the real proxy."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import time_machine
from django.test import Client

from tests.alerts.conftest import inbox, local_channels, receiver, receiver_down, rules, smtp, smtp_down
from tests.dashboard.conftest import fast_passwords, key_admin, nobody, viewer
from together_dash.endpoints.polling import poll_endpoints
from together_dash.keys.models import TogetherKey
from together_dash.keys.services import create_app_key
from together_dash.pollers.fanout import FanOutConfig
from together_dash.pollers.runs import PollReport
from together_dash.pollers.testing import add_key
from together_dash.proxy.app import record_to_database
from together_dash.proxy.testing import running_proxy
from together_dash.simulator import catalog, endpoints
from together_dash.simulator.testing import RunningSimulator

__all__ = [
    "fast_passwords", "inbox", "key_admin", "local_channels", "nobody", "receiver", "receiver_down", "rules",
    "smtp", "smtp_down", "viewer",
]

MODEL = catalog.SMALL_CHAT_MODEL
A100 = "1x_nvidia_a100_80gb_sxm"
H200 = "8x_nvidia_h200_141gb_sxm"  # listed, never schedulable: an endpoint on it ends in ERROR
BOOT_S = endpoints.PENDING_S + endpoints.STARTING_S
# A Tuesday morning, UTC (the tests' TIME_ZONE): "today" began at midnight.
MORNING = datetime(2026, 3, 10, 8, 0, tzinfo=UTC)


class Fleet:
    """The simulator's dedicated endpoints, with one clock for it and for us."""

    def __init__(self, simulator: RunningSimulator) -> None:
        self.simulator = simulator
        self.now = MORNING
        self.key, self.secret = add_key("main")
        simulator.freeze_clock(at=self.now.timestamp())
        self.http = httpx.Client(
            base_url=simulator.base_url, headers={"Authorization": f"Bearer {self.secret}"}, timeout=10
        )

    def at(self, moment: datetime) -> None:
        """Put both clocks at this moment (before anything is created)."""
        self.now = moment
        self.simulator.freeze_clock(at=moment.timestamp())

    def get(self, client: Client, path: str) -> object:
        """A page as it renders at our clock."""
        with time_machine.travel(self.now, tick=False):
            return client.get(path)

    def create(self, hardware: str = A100, **fields: object) -> dict:
        """POST /v1/endpoints: starts by itself (PENDING, STARTING, then STARTED after BOOT_S)."""
        scaling = {"min_replicas": 1, "max_replicas": 2}
        body = {"model": MODEL, "hardware": hardware, "autoscaling": scaling, **fields}
        answer = self.http.post("/endpoints", json=body)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def patch(self, endpoint_id: str, **fields: object) -> dict:
        answer = self.http.patch(f"/endpoints/{endpoint_id}", json=fields)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def delete(self, endpoint_id: str) -> None:
        assert self.http.delete(f"/endpoints/{endpoint_id}").status_code == 204

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
        self.simulator.advance(seconds)

    def poll(self, config: FanOutConfig | None = None) -> PollReport:
        """Run the endpoints poll with our clock at the simulator's."""
        with time_machine.travel(self.now, tick=False):
            return poll_endpoints(config=config)

    def run(self, seconds: float, every: float = 60) -> None:
        """Let time pass, polling every `every` seconds as beat would."""
        while seconds > 0:
            step = min(every, seconds)
            self.advance(step)
            self.poll()
            seconds -= step

    def chat_through_proxy(self, model: str, count: int = 1) -> list[int]:
        """Requests through the real proxy to the simulator, recorded to the database at our clock."""
        _, app_key = create_app_key(f"endpoint-client-{model[-8:]}-{count}")
        statuses = []
        upstream = self.simulator.base_url
        with time_machine.travel(self.now, tick=True):
            with running_proxy(upstream, record=record_to_database, log_flush_interval=0.01) as proxy:
                for n in range(count):
                    body = {"model": model, "messages": [{"role": "user", "content": f"question {n}"}]}
                    answer = httpx.post(
                        f"{proxy.base_url}/chat/completions", json=body,
                        headers={"Authorization": f"Bearer {app_key}"}, timeout=10,
                    )
                    statuses.append(answer.status_code)
                assert proxy.proxy.drain_logs()
        return statuses

    def close(self) -> None:
        self.http.close()


@pytest.fixture
def fleet(polled_simulator: RunningSimulator) -> Iterator[Fleet]:
    running = Fleet(polled_simulator)
    yield running
    running.close()
    polled_simulator.reset()


@pytest.fixture
def other_key() -> tuple[TogetherKey, str]:
    return add_key("second")
