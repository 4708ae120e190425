"""The real proxy for fault tests: the simulator and the dashboard's ASGI server as processes, a client.

The servers are the benchmarks' (bench/common.py): `manage.py together_simulator`, and uvicorn serving
together_dash.asgi as the Procfile does, on the database the test gives it.
"""
from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import psycopg

from bench.common import Dashboard, Simulator, rss_bytes

MODEL = "meta-llama/Llama-3.3-70B-Instruct-Turbo"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}
MB = 1024 * 1024


@contextlib.contextmanager
def proxy_servers(database_url: str, **settings: str) -> Iterator[tuple[Simulator, Dashboard]]:
    """The simulator and the dashboard (with the proxy) on database_url, with settings as env vars."""
    with Simulator() as simulator:
        env = {"DATABASE_URL": database_url, **settings}
        with Dashboard(upstream=simulator.base_url, env=env) as dashboard:
            yield simulator, dashboard


@dataclass(frozen=True)
class Answer:
    """What the client saw of one request."""

    status: int
    request_id: str
    at: float  # time.monotonic() when the answer arrived


def chat(dashboard: Dashboard, key: str) -> httpx.Response:
    """One chat completion through the proxy."""
    return httpx.post(f"{dashboard.base_url}/chat/completions", json=CHAT,
                      headers={"Authorization": f"Bearer {key}"}, timeout=30)


class Traffic:
    """`total` chat requests through the proxy from `clients` concurrent clients, in a thread of its own.

    Each client waits `pause` seconds after each answer, so the traffic is steady and lasts long enough
    to span a database restart.
    """

    def __init__(self, base_url: str, key: str, total: int, clients: int = 4, pause: float = 0.02) -> None:
        self.base_url, self.key, self.total, self.clients, self.pause = base_url, key, total, clients, pause
        self.answers: list[Answer] = []
        self.errors: list[str] = []
        self._sent = 0
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), name="traffic", daemon=True)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.join()

    def join(self, timeout: float = 120.0) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the traffic did not finish"

    def wait_for(self, answered: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.answers) + len(self.errors) < answered:
            assert time.monotonic() < deadline, f"only {len(self.answers)} answers after {timeout} s"
            time.sleep(0.01)

    async def _run(self) -> None:
        limits = httpx.Limits(max_connections=self.clients)
        async with httpx.AsyncClient(base_url=self.base_url, limits=limits, timeout=30.0) as client:
            await asyncio.gather(*(self._client(client) for _ in range(self.clients)))

    async def _client(self, client: httpx.AsyncClient) -> None:
        headers = {"Authorization": f"Bearer {self.key}"}
        while self._sent < self.total:
            self._sent += 1
            try:
                response = await client.post("/chat/completions", json=CHAT, headers=headers)
            except httpx.HTTPError as exc:  # counted, so the test shows it instead of hanging
                self.errors.append(repr(exc))
                continue
            answer = Answer(response.status_code, response.headers.get("x-request-id", ""), time.monotonic())
            self.answers.append(answer)
            await asyncio.sleep(self.pause)  # the pace of each client


def metric(dashboard: Dashboard, name: str) -> float:
    """A sample of the server process's /metrics (0 when absent)."""
    text = dashboard.metrics(series="proxy")
    for line in text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    return 0.0


@dataclass(frozen=True)
class LoggedRequest:
    request_id: str
    status_code: int | None
    category: str
    kind: str


def request_logs(database_url: str) -> list[LoggedRequest]:
    """Every RequestLog row of the server's database, oldest first."""
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT request_id, status_code, category, kind FROM traffic_requestlog ORDER BY id"
        ).fetchall()
    return [LoggedRequest(*row) for row in rows]


def wait_for_logs(database_url: str, count: int, timeout: float = 30.0) -> list[LoggedRequest]:
    """The rows once there are at least count of them (or whatever there is after the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = request_logs(database_url)
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


class RssSampler:
    """The peak resident set size of a process over a block, sampled from /proc every `every` seconds."""

    def __init__(self, pid: int, every: float = 0.01) -> None:
        self.pid, self.every = pid, every
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self.peak = rss_bytes(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.peak = max(self.peak, rss_bytes(self.pid))
