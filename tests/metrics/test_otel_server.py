"""OpenTelemetry export from a real server (uvicorn, two workers, as in production) set up by its settings.

The server is bench's Dashboard in demo mode against the test simulator, OTEL_EXPORTER_OTLP_ENDPOINT
pointing at an OTLP/HTTP receiver in the test: each worker builds its own exporters (asgi.py).
"""
from __future__ import annotations

import secrets
from pathlib import Path

import httpx

from bench.common import Dashboard
from tests.metrics.otlp_receiver import OtlpReceiver
from together_dash.simulator.testing import RunningSimulator

MODEL = "meta-llama/Llama-3.3-70B-Instruct-Turbo"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}
CHATS = 12  # each on a connection of its own, so both workers answer some


def test_every_worker_exports_its_requests_spans_inside_their_callers_traces_by_its_shutdown_at_the_latest(
    simulator: RunningSimulator, tmp_path: Path
) -> None:
    database = tmp_path / "db.sqlite3"
    with OtlpReceiver() as receiver:
        env = {"DATABASE_URL": f"sqlite:///{database}", "CACHE_URL": "locmemcache://",
               "CELERY_BROKER_URL": "filesystem://", "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
               # No batch is due before the server stops: the spans go out at its shutdown.
               "OTEL_BSP_SCHEDULE_DELAY": "600000", "OTEL_SERVICE_NAME": "dash-under-test"}
        with Dashboard(upstream=simulator.base_url, env=env, workers=2) as dashboard:
            key = dashboard.create_app_key("otel-server-tests")
            traces = {}
            for _ in range(CHATS):
                trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
                response = httpx.post(f"{dashboard.base_url}/chat/completions", json=CHAT, timeout=30,
                                      headers={"Authorization": f"Bearer {key}",
                                               "traceparent": f"00-{trace_id}-{span_id}-01"})
                assert response.status_code == 200
                traces[trace_id] = span_id
            assert receiver.spans == []
        received = receiver.wait_for_spans(CHATS, timeout=30)

    assert {span.span.trace_id.hex(): span.span.parent_span_id.hex() for span in received} == traces
    assert {span.resource["service.name"] for span in received} == {"dash-under-test"}
    assert {span.attributes["together_dash.app_key.name"] for span in received} == {"otel-server-tests"}
    assert len({span.resource["process.pid"] for span in received}) == 2
