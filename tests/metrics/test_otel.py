"""OpenTelemetry export through the real proxy and ingest API to an OTLP/HTTP receiver on loopback."""
from __future__ import annotations

import json
import secrets
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest
from django.test import Client
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.metrics.conftest import scrape
from tests.metrics.otlp_receiver import OtlpReceiver, attributes
from tests.waiting import wait_until
from together_dash.catalog.models import ModelInfo
from together_dash.catalog.pricing import invalidate_prices
from together_dash.keys.models import AppKey, TogetherKey
from together_dash.keys.services import create_app_key
from together_dash.metrics import otel
from together_dash.metrics.checks import check_otel_endpoint
from together_dash.proxy.testing import RunningProxy, running_proxy
from together_dash.simulator.testing import RunningSimulator
from together_dash.traffic.models import RequestBodySample, RequestLog

pytestmark = pytest.mark.django_db(transaction=True)

MODEL = "meta-llama/Llama-3.3-70B-Instruct-Turbo"


@pytest.fixture
def upstream(transactional_db: None) -> TogetherKey:
    ModelInfo.objects.create(model_id=MODEL, pricing_input=Decimal("1"), pricing_output=Decimal("2"))
    invalidate_prices()
    yield TogetherKey.create(name="otel-upstream", secret=f"sim-{secrets.token_urlsafe(24)}")
    invalidate_prices()


@pytest.fixture
def app_key(upstream: TogetherKey) -> str:
    return create_app_key("otel-tests")[1]


def export_to(url: str, settings: object, monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    """Export on, to url, from a fresh set of providers (the SDK reads OTEL_* when they are built)."""
    settings.OTEL_EXPORTER_OTLP_ENDPOINT = url
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "20")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    otel.reset()


@pytest.fixture
def receiver(settings: object, monkeypatch: pytest.MonkeyPatch, fresh_simulator: RunningSimulator
             ) -> Iterator[OtlpReceiver]:
    settings.TOGETHER_BASE_URL = fresh_simulator.base_url  # server.address: where requests go
    with OtlpReceiver() as running:
        export_to(running.url, settings, monkeypatch)
        yield running
        otel.reset()


@pytest.fixture
def proxy(receiver: OtlpReceiver, fresh_simulator: RunningSimulator) -> Iterator[RunningProxy]:
    with running_proxy(fresh_simulator.base_url, trace_context=True) as running:
        yield running


def caller_trace() -> tuple[str, str, str]:
    """A caller's trace id and span id, and the traceparent header it sends."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-01"


def chat(proxy: RunningProxy, app_key: str, text: str = "hello", **headers: str) -> httpx.Response:
    body = {"model": MODEL, "messages": [{"role": "user", "content": text}], "max_tokens": 16}
    return httpx.post(f"{proxy.base_url}/chat/completions", json=body, timeout=30,
                      headers={"Authorization": f"Bearer {app_key}", **headers})


def exported(proxy: RunningProxy, receiver: OtlpReceiver, count: int = 1) -> list:
    assert proxy.proxy.drain_logs(10.0)
    assert otel.telemetry().flush()
    return receiver.wait_for_spans(count)


def test_a_chat_completion_arrives_as_a_span_with_the_genai_attributes_inside_the_callers_trace(
    proxy: RunningProxy, receiver: OtlpReceiver, app_key: str, fresh_simulator: RunningSimulator
) -> None:
    trace_id, span_id, traceparent = caller_trace()

    response = chat(proxy, app_key, traceparent=traceparent)

    assert response.status_code == 200
    [received] = exported(proxy, receiver)
    log = RequestLog.objects.get()
    span = received.span
    assert span.trace_id.hex() == trace_id
    assert span.parent_span_id.hex() == span_id
    assert span.kind == Span.SPAN_KIND_CLIENT
    assert span.name == f"chat {MODEL}"
    assert received.resource["service.name"] == "together-dash"
    assert received.attributes == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "together_ai",
        "gen_ai.request.model": MODEL,
        "gen_ai.response.model": log.model_served,
        "gen_ai.usage.input_tokens": log.prompt_tokens,
        "gen_ai.usage.output_tokens": log.completion_tokens,
        "gen_ai.response.id": log.request_id,
        "server.address": "127.0.0.1",
        "server.port": httpx.URL(fresh_simulator.base_url).port,
        "http.response.status_code": 200,
        "together_dash.app_key.name": "otel-tests",
        "together_dash.upstream_key.name": "otel-upstream",
        "together_dash.cost_usd": float(log.cost_usd),
        "together_dash.source": "proxy",
        "together_dash.endpoint": "/v1/chat/completions",
        "together_dash.stream": False,
    }
    assert log.prompt_tokens > 0 and log.completion_tokens > 0 and log.cost_usd > 0
    start = datetime.fromtimestamp(span.start_time_unix_nano / 1e9, UTC)
    assert abs(start - log.created_at) < timedelta(milliseconds=1)
    took_ms = (span.end_time_unix_nano - span.start_time_unix_nano) / 1e6
    assert took_ms == pytest.approx(log.latency_ms, abs=0.01)


def test_a_request_without_traceparent_starts_a_trace_of_its_own(
    proxy: RunningProxy, receiver: OtlpReceiver, app_key: str
) -> None:
    assert chat(proxy, app_key).status_code == 200

    [received] = exported(proxy, receiver)

    assert len(received.span.trace_id) == 16 and received.span.parent_span_id == b""


def test_a_refused_request_carries_our_category_and_kind_as_error_type(
    proxy: RunningProxy, receiver: OtlpReceiver, upstream: TogetherKey
) -> None:
    response = chat(proxy, f"tdk_{secrets.token_urlsafe(30)}")

    assert response.status_code == 401
    [received] = exported(proxy, receiver)
    assert received.attributes["error.type"] == "auth.app_key_rejected"
    assert received.attributes["together_dash.error.category"] == "auth"
    assert received.span.status.code == received.span.status.STATUS_CODE_ERROR
    assert "together_dash.app_key.name" not in received.attributes


def test_the_genai_metrics_arrive_with_the_specs_names_units_buckets_and_attributes(
    proxy: RunningProxy, receiver: OtlpReceiver, app_key: str, fresh_simulator: RunningSimulator
) -> None:
    assert chat(proxy, app_key).status_code == 200
    assert chat(proxy, app_key).status_code == 200
    exported(proxy, receiver, 2)
    logs = list(RequestLog.objects.all())

    tokens = receiver.latest_metric("gen_ai.client.token.usage")
    duration = receiver.latest_metric("gen_ai.client.operation.duration")

    assert tokens.unit == "{token}" and duration.unit == "s"
    points = tokens.histogram.data_points
    by_type = {attributes(point.attributes)["gen_ai.token.type"]: point for point in points}
    assert set(by_type) == {"input", "output"}
    assert by_type["input"].sum == sum(log.prompt_tokens for log in logs)
    assert by_type["output"].sum == sum(log.completion_tokens for log in logs)
    assert list(by_type["input"].explicit_bounds) == list(otel.TOKEN_BUCKETS)
    [point] = duration.histogram.data_points
    assert point.count == 2
    assert list(point.explicit_bounds) == list(otel.DURATION_BUCKETS)
    assert point.sum == pytest.approx(sum(log.latency_ms for log in logs) / 1000, rel=1e-6)
    assert attributes(point.attributes) == {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "together_ai",
        "gen_ai.request.model": MODEL, "gen_ai.response.model": logs[0].model_served,
        "server.address": "127.0.0.1", "server.port": httpx.URL(fresh_simulator.base_url).port,
    }


def test_no_prompt_or_completion_text_is_exported_by_default(
    proxy: RunningProxy, receiver: OtlpReceiver, app_key: str
) -> None:
    marker = f"marker-{secrets.token_hex(8)}"

    response = chat(proxy, app_key, text=f"say {marker}")

    assert response.status_code == 200
    [received] = exported(proxy, receiver)
    assert not any(marker.encode() in body for body in receiver.bodies)
    assert not any(name.endswith(".body") or "messages" in name for name in received.attributes)


def test_otel_capture_content_exports_the_bodies_redacted(
    receiver: OtlpReceiver, app_key: str, fresh_simulator: RunningSimulator, settings: object
) -> None:
    settings.OTEL_CAPTURE_CONTENT = True
    marker = f"marker-{secrets.token_hex(8)}"

    with running_proxy(fresh_simulator.base_url, trace_context=True, capture_content=True) as proxy:
        assert chat(proxy, app_key, text=f"say {marker}").status_code == 200
        [received] = exported(proxy, receiver)

    assert marker in received.attributes["together_dash.request.body"]
    assert json.loads(received.attributes["together_dash.response.body"])["choices"]
    assert app_key not in received.attributes["together_dash.request.body"]
    assert not RequestBodySample.objects.exists()  # captured for the span, not stored


def test_an_ingested_record_arrives_as_a_span_with_its_own_start_and_end(
    receiver: OtlpReceiver, upstream: TogetherKey, client: Client
) -> None:
    key = AppKey(name="batch-jobs", upstream_key=upstream)
    secret = key.issue()
    key.save()
    sent_at = datetime.now(UTC).replace(microsecond=250_000) - timedelta(minutes=3)
    record = {"id": "job-1", "timestamp": sent_at.isoformat(), "endpoint": "/v1/embeddings", "model": MODEL,
              "status": 429, "latency_ms": 1500.0, "usage": {"prompt_tokens": 12},
              "error": {"error": {"message": "Rate limit exceeded", "type": "rate_limit_exceeded"}}}

    response = client.post("/api/ingest", data=json.dumps([record]), content_type="application/json",
                           HTTP_AUTHORIZATION=f"Bearer {secret}")
    again = client.post("/api/ingest", data=json.dumps([record]), content_type="application/json",
                        HTTP_AUTHORIZATION=f"Bearer {secret}")

    assert response.status_code == 200 and again.status_code == 200, response.content
    assert otel.telemetry().flush()
    [received] = receiver.wait_for_spans(1)
    span = received.span
    assert span.start_time_unix_nano == int(sent_at.timestamp() * 1e9)
    assert span.end_time_unix_nano - span.start_time_unix_nano == 1_500_000_000
    assert span.parent_span_id == b""
    log = RequestLog.objects.get()
    assert received.attributes["gen_ai.operation.name"] == "embeddings"
    assert received.attributes["together_dash.source"] == "ingest"
    assert received.attributes["together_dash.app_key.name"] == "batch-jobs"
    assert received.attributes["error.type"] == f"{log.category}.{log.kind}"
    assert received.attributes["gen_ai.usage.input_tokens"] == 12
    assert "gen_ai.usage.output_tokens" not in received.attributes
    assert len(receiver.spans) == 1  # the re-sent record was not stored, so no second span


@pytest.mark.parametrize("endpoint", ["otel-collector:4318", "ftp://collector", "http://", "http://c:port"])
def test_an_endpoint_that_is_not_an_http_url_is_a_system_check_error(endpoint: str, settings: object) -> None:
    settings.OTEL_EXPORTER_OTLP_ENDPOINT = endpoint

    [error] = check_otel_endpoint()

    assert error.id == "together_dash.metrics.E001"
    assert repr(endpoint) in error.msg


def test_an_http_endpoint_or_none_passes_the_check(settings: object) -> None:
    for endpoint in ("", "http://127.0.0.1:4318", "https://otlp.example.com/otlp"):
        settings.OTEL_EXPORTER_OTLP_ENDPOINT = endpoint
        assert check_otel_endpoint() == []


@pytest.fixture
def dead_collector() -> Iterator[str]:
    """A collector that is down: a port held bound, never listening, refuses every connection."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{held.getsockname()[1]}"


def test_with_the_collector_down_requests_succeed_and_every_dropped_span_is_counted_on_metrics(
    receiver: OtlpReceiver, app_key: str, fresh_simulator: RunningSimulator, settings: object,
    monkeypatch: pytest.MonkeyPatch, client: Client, metrics_token: str, dead_collector: str,
) -> None:
    export_to(dead_collector, settings, monkeypatch, OTEL_BSP_MAX_QUEUE_SIZE="2",
              OTEL_BSP_MAX_EXPORT_BATCH_SIZE="1", OTEL_EXPORTER_OTLP_TIMEOUT="1")
    before = scrape(client).total("together_dash_otel_dropped_total", signal="spans")

    with running_proxy(fresh_simulator.base_url, trace_context=True) as proxy:
        statuses = [chat(proxy, app_key).status_code for _ in range(6)]
        assert proxy.proxy.drain_logs(10.0)

    assert statuses == [200] * 6
    assert RequestLog.objects.count() == 6

    def dropped() -> float:
        return scrape(client).total("together_dash_otel_dropped_total", signal="spans") - before

    wait_until(lambda: dropped() >= 6, timeout=30, message="six dropped spans counted")
    assert dropped() == 6
    exposition = scrape(client)  # the first export failed after its timeout; the queue overflowed meanwhile
    assert exposition.total("together_dash_otel_dropped_total", signal="spans", reason="export_failed") >= 1
    assert exposition.total("together_dash_otel_dropped_total", signal="spans", reason="queue_full") >= 1
    assert receiver.spans == []
