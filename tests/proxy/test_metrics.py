"""The proxy's own series: requests by endpoint and status class, upstream latency, time to first token."""
from __future__ import annotations

import uuid

import httpx
import pytest
from prometheus_client import REGISTRY

from together_dash.proxy.buffer import LogBuffer
from together_dash.proxy.metrics import ENDPOINTS, endpoint_label, status_class
from together_dash.proxy.testing import RunningProxy
from together_dash.traffic.entries import LogEntry
from together_dash.traffic.models import RequestLog

MODEL = "meta-llama/Llama-3.3-70B-Instruct-Turbo"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 16}


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Deltas:
    """How much each series moved since the block began (other tests in this process move them too)."""

    def __init__(self, *series: tuple[str, dict[str, str]]) -> None:
        self.series = series
        self.before = [sample(name, **labels) for name, labels in series]

    def now(self) -> list[float]:
        pairs = zip(self.series, self.before, strict=True)
        return [sample(name, **labels) - first for (name, labels), first in pairs]


@pytest.mark.parametrize(
    ("endpoint", "label"),
    [
        ("/v1/chat/completions", "chat/completions"),
        ("/v1/completions", "completions"),
        ("/v1/embeddings", "embeddings"),
        ("/v1/audio/speech", "audio/speech"),
        ("/v1/fine-tunes/{id}/events", "fine-tunes"),
        ("/v1/files/{id}/content", "files"),
        ("/v2/projects/{id}/models", "projects"),
        ("/v3/whoami", "whoami"),
        ("/v1/audio/something-new", "other"),
        ("/v1/drop-table-users", "other"),
        ("/v1", "other"),
        ("/", "other"),
    ],
)
def test_the_endpoint_label_is_the_resource_without_version_or_ids(endpoint: str, label: str) -> None:
    assert endpoint_label(endpoint) == label


@pytest.mark.parametrize(
    ("status", "label"), [(200, "2xx"), (101, "1xx"), (304, "3xx"), (429, "4xx"), (503, "5xx"),
                          (None, "proxy_error"), (99, "proxy_error"), (600, "proxy_error")],
)
def test_statuses_fall_in_their_class(status: int | None, label: str) -> None:
    assert status_class(status) == label


# ---- through the proxy -------------------------------------------------------------------------------

def call(
    proxy: RunningProxy, key: str, path: str, body: dict | None = None, **headers: str
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}", **headers}
    if body is None:
        return httpx.get(f"{proxy.base_url}{path}", headers=headers, timeout=10)
    return httpx.post(f"{proxy.base_url}{path}", json=body, headers=headers, timeout=10)


def test_requests_are_counted_by_endpoint_and_status_class(proxy: RunningProxy, app_key: str) -> None:
    requests = "together_dash_proxy_requests_total"
    latency = "together_dash_proxy_upstream_latency_seconds_count"
    deltas = Deltas(
        (requests, {"endpoint": "chat/completions", "status_class": "2xx"}),
        (requests, {"endpoint": "chat/completions", "status_class": "4xx"}),
        (requests, {"endpoint": "embeddings", "status_class": "2xx"}),
        (requests, {"endpoint": "models", "status_class": "2xx"}),
        (latency, {"endpoint": "chat/completions"}),
    )

    assert call(proxy, app_key, "/chat/completions", CHAT).status_code == 200
    assert call(proxy, app_key, "/chat/completions", CHAT, **{"X-Simulate": "429"}).status_code == 429
    assert call(proxy, "tdk_not-a-key", "/chat/completions", CHAT).status_code == 401  # refused by us
    assert call(proxy, app_key, "/embeddings", {"model": "BAAI/bge-large-en-v1.5", "input": "hi"}).is_success
    assert call(proxy, app_key, "/models").status_code == 200
    assert proxy.proxy.drain_logs()

    # The 401 never went upstream: counted as a request, without an upstream latency.
    assert deltas.now() == [1, 2, 1, 1, 2]


def test_time_to_first_token_is_observed_for_streams_as_the_log_records_it(
    proxy: RunningProxy, app_key: str
) -> None:
    ttft, chat = "together_dash_proxy_time_to_first_token_seconds", {"endpoint": "chat/completions"}
    deltas = Deltas((f"{ttft}_count", chat), (f"{ttft}_sum", chat))

    assert call(proxy, app_key, "/chat/completions", CHAT).status_code == 200  # not streamed: no ttft
    with httpx.stream("POST", f"{proxy.base_url}/chat/completions", json={**CHAT, "stream": True},
                      headers={"Authorization": f"Bearer {app_key}"}, timeout=10) as response:
        assert response.status_code == 200
        response.read()
    assert proxy.proxy.drain_logs()

    observed, seconds = deltas.now()
    streamed = RequestLog.objects.get(stream=True)
    assert observed == 1
    assert seconds == pytest.approx(streamed.ttft_ms / 1000.0)


def test_any_path_a_client_makes_up_lands_on_a_known_endpoint_label(
    proxy: RunningProxy, app_key: str
) -> None:
    for _ in range(20):
        call(proxy, app_key, f"/{uuid.uuid4().hex}/{uuid.uuid4().hex}")
    assert proxy.proxy.drain_logs()

    labels = {
        sample_.labels["endpoint"]
        for family in REGISTRY.collect() if family.name == "together_dash_proxy_requests"
        for sample_ in family.samples
    }
    assert labels <= ENDPOINTS | {"other"}


def test_the_log_buffer_gauge_follows_the_buffer() -> None:
    gauge = "together_dash_proxy_log_buffer_size"
    buffer = LogBuffer(capacity=10)
    for number in range(3):
        buffer.put(LogEntry(created_at=None, endpoint=f"/v1/{number}"))  # type: ignore[arg-type]
    assert sample(gauge) == 3

    batch = buffer.take(2)
    assert sample(gauge) == 3  # a batch being written still counts
    buffer.done(batch)
    assert sample(gauge) == 1
    buffer.drop(buffer.take(1))
    assert sample(gauge) == 0
