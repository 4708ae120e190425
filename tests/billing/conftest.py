"""Fixtures for the billing tests: the session's simulator as the pollers' upstream, its clock frozen
where a test puts it, and our own clock moved with it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal

import httpx
import pytest
import time_machine
import together
from django.test import Client

from tests.dashboard.conftest import logged_in, make_user
from together_dash.billing.polling import poll_billing
from together_dash.core.roles import VIEWER_GROUP
from together_dash.pollers.fanout import FanOutConfig
from together_dash.pollers.runs import PollReport
from together_dash.simulator import catalog
from together_dash.simulator.testing import RunningSimulator

MODEL = catalog.DEFAULT_CHAT_MODEL


class Biller:
    """The simulator as Together's biller: calls billed at set times, its report read with together 3.x."""

    def __init__(self, simulator: RunningSimulator) -> None:
        self.simulator = simulator

    def at(self, moment: datetime) -> None:
        """Freeze the simulator's clock at this moment (billed calls land in its hour)."""
        self.simulator.freeze_clock(at=moment.timestamp())

    def chat(self, secret: str, content: str = "Say hello", model: str = MODEL) -> dict:
        body = {"model": model, "messages": [{"role": "user", "content": content}]}
        headers = {"Authorization": f"Bearer {secret}"}
        answer = httpx.post(f"{self.simulator.base_url}/chat/completions", json=body, headers=headers)
        assert answer.status_code == 200, answer.text
        return answer.json()["usage"]

    def report(self, secret: str, month: str) -> list:
        """Every hourly window of the month, as together 3.x's organization.usage.costs.list reads them."""
        with together.Together(base_url=self.simulator.root_url, api_key=secret, max_retries=0) as client:
            return list(client.organization.usage.costs.list(month=month, granularity="hour"))

    def poll(self, at: datetime, config: FanOutConfig | None = None) -> PollReport:
        """Run the billing poll with our clock (and the simulator's) at this moment."""
        self.at(at)
        with time_machine.travel(at, tick=False):
            return poll_billing(config=config)


@pytest.fixture
def biller(polled_simulator: RunningSimulator) -> Iterator[Biller]:
    yield Biller(polled_simulator)
    polled_simulator.reset()


def exact(value: object) -> str:
    """A Decimal as text, trailing zeros off: the stored amount and the reported string compare equal."""
    assert isinstance(value, Decimal)
    text = format(value.normalize(), "f")
    return "0" if text == "-0" else text


@pytest.fixture
def viewer_web(db: None, settings: object) -> Client:
    """A logged-in viewer (fast password hashing: the tests log in, they do not test hashing)."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    return logged_in(make_user("vic-viewer", VIEWER_GROUP))
