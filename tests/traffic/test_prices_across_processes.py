"""A request recorded right after another process polled the catalog is priced.

The regression of "cost unknown for the first minute after make run": the web process priced its first
request before the worker's first catalog poll, kept that empty price table for a minute, and logged
every request of that minute as unknown. Here the catalog is polled by `manage.py poll_models` in a
process of its own, as the worker does, and this process must price its very next request.
"""

from __future__ import annotations

import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone

from tests.pollers.test_celery_worker import WorkerDatabase
from together_dash.pollers.testing import add_key
from together_dash.simulator import catalog
from together_dash.simulator.testing import RunningSimulator
from together_dash.traffic.entries import LogEntry
from together_dash.traffic.models import RequestLog, UsageHour
from together_dash.traffic.recording import record_entries

pytestmark = pytest.mark.django_db(transaction=True)

MODEL = catalog.get(catalog.DEFAULT_CHAT_MODEL)


def request(content_id: str) -> LogEntry:
    return LogEntry(
        created_at=timezone.now(), endpoint="/v1/chat/completions", model_requested=MODEL.id,
        status_code=200, latency_ms=50.0, prompt_tokens=1000, completion_tokens=100, total_tokens=1100,
        request_id=content_id,
    )


def poll_models_in_another_process(database: WorkerDatabase, base_url: str) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": database.url,
        "TOGETHER_BASE_URL": base_url,
        "TOGETHER_DASH_VAR_DIR": str(settings.VAR_DIR),
    }
    database.hand_over()
    subprocess.run(
        [sys.executable, "manage.py", "poll_models"], cwd=settings.BASE_DIR, env=env, check=True,
        capture_output=True, timeout=120,
    )
    database.refresh()


def test_a_request_recorded_right_after_another_process_polled_the_catalog_is_priced(
    polled_simulator: RunningSimulator, tmp_path: Path
) -> None:
    add_key("main")
    record_entries([request("before-the-poll")])  # this process has now read the (empty) catalog

    poll_models_in_another_process(WorkerDatabase(tmp_path), polled_simulator.base_url)
    record_entries([request("right-after-the-poll")])

    costs = dict(RequestLog.objects.values_list("request_id", "cost_usd"))
    expected = (Decimal(str(MODEL.input_price)) * 1000 + Decimal(str(MODEL.output_price)) * 100) / 1_000_000
    assert costs == {"before-the-poll": None, "right-after-the-poll": expected}
    hour = UsageHour.objects.get(model=MODEL.id)
    assert (hour.cost_usd, hour.unpriced_requests) == (expected, 1)
