"""Upstream faults through the real proxy process: each answered clearly, logged by its kind, survived.

Promised (DESIGN.md, "Error taxonomy"; README, "Point an OpenAI or Together client at the proxy"):
upstream answers are forwarded unchanged; when there is no answer the client gets a 502 or 504 in
Together's error shape; every request is logged with its category and kind (timeout / reset /
unparseable body: network; 502/504: server upstream_timeout; 503: service_unavailable); a fault never
takes the server down; a 50 MB stream is relayed, never held whole; memory stays flat under faults.
The simulator makes the faults (X-Simulate) and uvicorn serves together_dash.asgi as in the Procfile.
"""
from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from bench.common import RawClient, Simulator, rss_bytes
from tests.faults._pg import Postgres
from tests.faults._proxy import CHAT, MB, RssSampler, chat, proxy_servers, wait_for_logs
from tests.services import require_ci_service

FORWARDED = "forwarded: the simulator's own body, unchanged"
CUT = "cut: the connection ends before the stream does"
UPSTREAM_TIMEOUT = 1.0  # TOGETHER_TIMEOUT of the server: how long `X-Simulate: timeout` takes


@dataclass(frozen=True)
class Fault:
    """An upstream fault, what the client must get, and how its request log must classify it."""

    name: str  # the X-Simulate value
    status: int
    answer: str  # FORWARDED, CUT, or the error code of the proxy's own answer in Together's shape
    category: str
    kind: str
    stream: bool = False


FAULTS = [
    Fault("timeout", 504, "upstream_timeout", "network", "timeout"),
    Fault("reset", 502, "upstream_connect_error", "network", "connection_error"),
    Fault("malformed", 200, FORWARDED, "network", "bad_response"),
    Fault("html", 502, FORWARDED, "server", "upstream_timeout"),  # a load balancer's HTML page
    Fault("503", 503, FORWARDED, "server", "service_unavailable"),
    Fault("500", 500, FORWARDED, "server", "model_overloaded"),
    Fault("midstream-reset", 200, CUT, "network", "connection_error", stream=True),
]
FAULT_NAMED = {fault.name: fault for fault in FAULTS}


@pytest.fixture
def database() -> Iterator[str]:
    """A scratch PostgreSQL database for the server, dropped after the test."""
    postgres = Postgres()
    if not postgres.accepts_connections():
        require_ci_service("PostgreSQL does not accept connections")
    with postgres.scratch_database() as name:
        yield postgres.url(name)


def test_each_fault_is_answered_clearly_logged_by_its_kind_and_the_server_serves_on(database: str) -> None:
    with proxy_servers(database, TOGETHER_TIMEOUT=str(UPSTREAM_TIMEOUT)) as (simulator, dashboard):
        key = dashboard.create_app_key("faults-upstream")
        answers, next_statuses, alive = {}, {}, {}
        for fault in FAULTS:
            answers[fault.name] = answer(dashboard.base_url, key, fault, simulator)
            alive[fault.name] = dashboard.process.poll() is None
            next_statuses[fault.name] = chat(dashboard, key).status_code
        rows = wait_for_logs(database, 2 * len(FAULTS))

    assert answers == {fault.name: (fault.status, fault.answer) for fault in FAULTS}
    assert alive == {fault.name: True for fault in FAULTS}
    assert next_statuses == {fault.name: 200 for fault in FAULTS}
    assert len(rows) == 2 * len(FAULTS)
    fault_rows = zip(FAULTS, rows[0::2], strict=True)
    logged = {fault.name: (row.status_code, row.category, row.kind) for fault, row in fault_rows}
    assert logged == {fault.name: (fault.status, fault.category, fault.kind) for fault in FAULTS}
    assert {(row.status_code, row.category) for row in rows[1::2]} == {(200, "")}


def test_a_50_mb_stream_to_a_slow_reader_is_relayed_without_being_held(database: str) -> None:
    size = 50 * MB
    with proxy_servers(database) as (_, dashboard):
        key = dashboard.create_app_key("faults-big-stream")
        stream_through(dashboard.base_url, key, 2 * MB, sink_delay=0.0)  # first-use allocations, once
        before = rss_bytes(dashboard.pid)
        with RssSampler(dashboard.pid) as rss:
            received = stream_through(dashboard.base_url, key, size, sink_delay=0.002)
        next_status = chat(dashboard, key).status_code
        rows = wait_for_logs(database, 3)

    assert received > size  # the content plus its SSE framing, to the end of the stream
    rise = rss.peak - before
    assert rise < 10 * MB, f"the server's RSS rose by {rise / MB:.1f} MB during a {size // MB} MB stream"
    assert next_status == 200
    assert [(row.status_code, row.category) for row in rows] == [(200, "")] * 3


def test_memory_stays_flat_over_hundreds_of_faulty_requests(database: str) -> None:
    mix = ["", *FAULT_NAMED, "", ""]  # three in ten requests are plain, the rest one fault each
    warm_up, rounds, per_round = 100, 4, 100
    with proxy_servers(database, TOGETHER_TIMEOUT=str(UPSTREAM_TIMEOUT)) as (_, dashboard):
        key = dashboard.create_app_key("faults-memory")
        outcomes = asyncio.run(mixed_requests(dashboard.base_url, key, mix, warm_up))
        samples = [rss_bytes(dashboard.pid)]
        for _ in range(rounds):
            outcomes += asyncio.run(mixed_requests(dashboard.base_url, key, mix, per_round))
            samples.append(rss_bytes(dashboard.pid))
        alive = dashboard.process.poll() is None
        total = warm_up + rounds * per_round
        logged = len(wait_for_logs(database, total))

    expected = Counter((name, expected_outcome(name)) for name in (mix[i % len(mix)] for i in range(total)))
    assert outcomes == expected
    assert alive
    assert logged == total
    growth = samples[-1] - samples[0]
    figures = ", ".join(f"{sample / MB:.1f}" for sample in samples)
    assert growth < 2 * MB, f"RSS after the warm-up and each {per_round} requests, MB: {figures}"


# ---- the client side ---------------------------------------------------------------------------------

def answer(base_url: str, key: str, fault: Fault, simulator: Simulator) -> tuple[int, str]:
    """The status the client got and what came with it (see Fault.answer)."""
    status, body = send(base_url, key, fault)
    if body is None:
        return status, CUT
    if fault.answer == FORWARDED and body == send(simulator.base_url, "direct", fault)[1]:
        return status, FORWARDED
    try:
        error = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        return status, f"unexpected body {body[:100]!r}"
    if set(error) != {"message", "type", "param", "code"}:
        return status, f"not Together's error shape: {error!r}"
    return status, error["code"]


def send(base_url: str, key: str, fault: Fault) -> tuple[int, bytes | None]:
    """One chat request with the fault; the body is None when the connection was cut mid-response."""
    headers = {"Authorization": f"Bearer {key}", "X-Simulate": fault.name}
    body = {**CHAT, "stream": fault.stream}
    url = f"{base_url}/chat/completions"
    with httpx.stream("POST", url, json=body, headers=headers, timeout=30) as response:
        try:
            return response.status_code, response.read()
        except httpx.RemoteProtocolError:
            return response.status_code, None


def stream_through(base_url: str, key: str, size: int, sink_delay: float) -> int:
    """Bytes received of a streamed completion of `size` bytes of content, read sink_delay s per chunk."""

    async def read() -> int:
        client = RawClient(base_url, key)
        headers = {"X-Simulate-Output-Bytes": str(size), "X-Simulate-Chunk-Bytes": "16384"}
        request = client.encode("POST", "/chat/completions", {**CHAT, "stream": True}, headers)
        timing = await client.send(request, sink_delay=sink_delay)
        await client.close()
        assert timing.status == 200
        return timing.size

    return asyncio.run(read())


async def mixed_requests(base_url: str, key: str, mix: list[str], total: int) -> Counter[tuple[str, str]]:
    """`total` requests cycling through mix (fault names, "" for none) from 16 clients: their outcomes."""
    outcomes: Counter[tuple[str, str]] = Counter()
    pending = iter(range(total))

    async def client(http: httpx.AsyncClient) -> None:
        for number in pending:
            name = mix[number % len(mix)]
            outcomes[(name, await outcome(http, key, name))] += 1

    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        await asyncio.gather(*(client(http) for _ in range(16)))
    return outcomes


async def outcome(http: httpx.AsyncClient, key: str, name: str) -> str:
    """The status of one request with the named fault, with the code when the proxy answered it itself."""
    fault = FAULT_NAMED.get(name)
    headers = {"Authorization": f"Bearer {key}", **({"X-Simulate": name} if name else {})}
    body = {**CHAT, "stream": bool(fault and fault.stream)}
    try:
        response = await http.post("/chat/completions", json=body, headers=headers)
    except httpx.RemoteProtocolError:
        return "cut"
    if response.headers.get("x-request-id"):  # an upstream answer, relayed
        return str(response.status_code)
    return f"{response.status_code} {response.json()['error']['code']}"


def expected_outcome(name: str) -> str:
    fault = FAULT_NAMED.get(name)
    if fault is None:
        return "200"
    if fault.answer == CUT:
        return "cut"
    return str(fault.status) if fault.answer == FORWARDED else f"{fault.status} {fault.answer}"
