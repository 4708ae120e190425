"""`manage.py demo_traffic`: a realistic mix through the proxy, recorded like any other traffic."""
from __future__ import annotations

import random
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings

from together_dash.demo.management.commands.demo_traffic import DEMO_KEY_NAME, pick_request
from together_dash.keys.models import AppKey, TogetherKey
from together_dash.proxy.testing import running_proxy
from together_dash.simulator.testing import RunningSimulator
from together_dash.traffic.models import RequestLog


@pytest.mark.django_db(transaction=True)
def test_it_sends_a_mix_of_successes_and_errors_through_the_proxy(fresh_simulator: RunningSimulator) -> None:
    TogetherKey.create(name="demo", secret="sim-demo-upstream-key-0000")
    with running_proxy(fresh_simulator.base_url) as proxy, override_settings(DEMO_MODE=True):
        for _ in range(2):  # a second start reuses the demo key (rotated: only its hash is stored)
            call_command("demo_traffic", base_url=proxy.base_url, count=60, rate=1000, seed=7,
                         stdout=StringIO())
            assert proxy.proxy.drain_logs()  # in-memory SQLite locks whole tables: no writes at once

    assert AppKey.objects.filter(name=DEMO_KEY_NAME).count() == 1
    logs = RequestLog.objects.all()
    assert logs.count() == 120
    assert logs.filter(status_code=200, stream=True).exists()
    assert logs.filter(endpoint="/v1/embeddings", status_code=200).exists()
    assert {"rate_limit", "server"} <= set(logs.exclude(category="").values_list("category", flat=True))


def test_the_mix_is_mostly_successful_requests_with_a_few_errors() -> None:
    rng = random.Random(3)
    labels = [pick_request(rng).label for _ in range(2000)]

    faults = sum(label.startswith("chat, upstream") for label in labels)
    assert labels.count("chat") > 600
    assert 100 < faults < 400
    assert labels.count("chat, upstream 402") < 30


def test_it_refuses_to_run_outside_demo_mode() -> None:
    with override_settings(DEMO_MODE=False), pytest.raises(CommandError, match="demo mode"):
        call_command("demo_traffic", count=1)
