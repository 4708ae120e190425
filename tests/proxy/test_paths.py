"""Which paths the proxy serves: every API version Together uses, never a dot segment, never /v1/v1."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any

import pytest

from together_dash.keys.models import TogetherKey
from together_dash.keys.services import create_app_key
from together_dash.pollers.testing import new_secret
from together_dash.proxy.testing import RunningProxy, running_proxy, serve
from together_dash.traffic.models import RequestLog


class RecordingUpstream:
    """An upstream that answers every request with 200 {} and remembers the raw paths it was sent."""

    def __init__(self) -> None:
        self.paths: list[bytes] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.paths.append(scope["raw_path"])
        body = b'{"object": "list", "data": []}'
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture
def upstream() -> Iterator[tuple[RecordingUpstream, str]]:
    app = RecordingUpstream()
    with serve(app, lifespan="off") as server:
        yield app, server.root_url


@pytest.fixture
def proxy(transactional_db: None, upstream: tuple[RecordingUpstream, str]) -> Iterator[RunningProxy]:
    # TOGETHER_BASE_URL names /v1, as it does by default; the other versions sit beside it.
    with running_proxy(f"{upstream[1]}/v1") as running:
        yield running


@pytest.fixture
def app_key(transactional_db: None) -> str:
    TogetherKey.create(name="main", secret=new_secret())
    return create_app_key("paths")[1]


def raw_get(proxy: RunningProxy, path: str, key: str) -> tuple[int, dict[str, Any]]:
    """GET the path exactly as written: http.client sends it verbatim (httpx would resolve '..')."""
    host, port = proxy.root_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request("GET", path, headers={"Authorization": f"Bearer {key}"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


@pytest.mark.parametrize("path", ["/v1/models", "/v2/supported-models?product=PRODUCT_SERVERLESS",
                                  "/v2/projects/proj_demo/models", "/v3/whoami"])
def test_each_api_version_is_forwarded_with_its_own_path_and_logged(
    proxy: RunningProxy, upstream: tuple[RecordingUpstream, str], app_key: str, path: str
) -> None:
    status, _ = raw_get(proxy, path, app_key)
    assert proxy.proxy.drain_logs()

    assert status == 200
    assert upstream[0].paths == [path.split("?")[0].encode()]
    log = RequestLog.objects.get()
    assert (log.method, log.status_code) == ("GET", 200)
    assert log.endpoint == path.split("?")[0].replace("proj_demo", "{id}")


@pytest.mark.parametrize(
    "path", ["/v1/../admin/", "/v1/%2e%2e/admin/", "/v1/..%2fadmin/", "/v1/%2E%2E%2Fkeys/"]
)
def test_a_dot_segment_is_refused_and_never_forwarded(
    proxy: RunningProxy, upstream: tuple[RecordingUpstream, str], app_key: str, path: str
) -> None:
    status, body = raw_get(proxy, path, app_key)
    assert proxy.proxy.drain_logs()

    assert status == 400
    assert body["error"]["code"] == "invalid_path"
    assert upstream[0].paths == []
    assert RequestLog.objects.get().status_code == 400


def test_a_doubled_version_prefix_gets_a_404_that_names_each_sdks_base_url(
    proxy: RunningProxy, upstream: tuple[RecordingUpstream, str], app_key: str
) -> None:
    status, body = raw_get(proxy, "/v1/v1/chat/completions", app_key)

    assert status == 404
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert "together 3.x" in body["error"]["message"] and "/v1" in body["error"]["message"]
    assert upstream[0].paths == []


def test_a_path_the_proxy_refuses_needs_no_key_to_be_refused(proxy: RunningProxy) -> None:
    # The path is checked first: a bad path is a 400 whatever the key, and says nothing about keys.
    status, body = raw_get(proxy, "/v1/../admin/", "no-such-key")
    assert (status, body["error"]["code"]) == (400, "invalid_path")
