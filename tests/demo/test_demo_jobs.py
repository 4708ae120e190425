"""`manage.py demo_jobs`: in demo mode the simulator gets one idle dedicated endpoint, so the endpoints page
and its alerts have something to show."""
from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.test import override_settings

from together_dash.demo.jobs import IDLE_ENDPOINT_NAME, ensure_idle_endpoint
from together_dash.endpoints.models import Endpoint
from together_dash.endpoints.polling import poll_endpoints
from together_dash.pollers.testing import add_key
from together_dash.simulator.testing import RunningSimulator
from together_dash.together.client import TogetherClient


@pytest.mark.django_db(transaction=True)
def test_demo_jobs_creates_one_idle_endpoint_that_the_poller_sees(polled_simulator: RunningSimulator) -> None:
    add_key("demo")
    with override_settings(DEMO_MODE=True):
        for _ in range(2):  # a restart of make run finds it and creates no second one
            call_command("demo_jobs", once=True, stdout=StringIO(), stderr=StringIO())

    poll_endpoints()

    endpoint = Endpoint.objects.get()
    assert endpoint.display_name == IDLE_ENDPOINT_NAME
    assert endpoint.inactive_timeout is None


def test_ensure_idle_endpoint_leaves_an_existing_one_alone(fresh_simulator: RunningSimulator) -> None:
    with TogetherClient("sim-demo-key", base_url=fresh_simulator.base_url) as client:
        created = ensure_idle_endpoint(client)
        again = ensure_idle_endpoint(client)

    assert created is not None and created.state == "PENDING"
    assert again is None
