"""Each periodic task's management command runs the same poll without a broker."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command

from together_dash.catalog.models import ModelInfo
from together_dash.demo.jobs import batch_lines, start_batch, start_fine_tune
from together_dash.jobs.models import BatchJob, FineTuneJob
from together_dash.keys.models import RateLimitSnapshot, TogetherKey
from together_dash.pollers.models import PollerHeartbeat
from together_dash.pollers.testing import add_key
from together_dash.simulator.testing import RunningSimulator
from together_dash.together.client import TogetherClient
from together_dash.traffic.models import RequestLog

pytestmark = pytest.mark.django_db


def _run(command: str) -> str:
    out = StringIO()
    call_command(command, stdout=out)
    return out.getvalue()


def test_every_poller_command_polls_and_records_its_heartbeat(together: RunningSimulator) -> None:
    key, secret = add_key("main")
    with TogetherClient(secret, base_url=together.base_url) as client:
        start_fine_tune(client)
        start_batch(client, batch_lines(2))
    RequestLog.objects.create(
        upstream_key=key,
        endpoint="/v1/chat/completions",
        model_requested="m",
        ratelimit_limit=10,
        ratelimit_remaining=5,
    )
    outputs = {
        name: _run(name)
        for name in (
            "poll_models",
            "poll_rate_limits",
            "poll_fine_tunes",
            "poll_batches",
            "check_keys",
        )
    }
    for name, output in outputs.items():
        assert output.startswith(f"{name}: 1/1 keys ok"), output
    assert ModelInfo.objects.exists()
    assert RateLimitSnapshot.objects.filter(source="proxy").exists()
    assert FineTuneJob.objects.exists() and BatchJob.objects.exists()
    assert TogetherKey.objects.get().health == TogetherKey.Health.HEALTHY
    assert PollerHeartbeat.objects.filter(last_success__isnull=False).count() == 5
