"""Helpers shared by the benchmarks: processes on free ports, a near-zero-cost HTTP client, percentiles.

    with Simulator() as sim, Dashboard(upstream=sim.base_url) as dash:
        key = dash.create_app_key("bench")
        ...  # drive sim.base_url and dash.base_url with RawClient

Each server runs in its own process, started the way production starts it (manage.py / uvicorn),
with a throwaway data directory and SQLite database unless DATABASE_URL is set.
"""
from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_ready(url: str, process: subprocess.Popen, timeout: float = 60.0) -> None:
    """Poll url until it answers (any status); fail if the process dies first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{process.args!r} exited with {process.returncode}")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit(f"{url} did not come up within {timeout:.0f} s")


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used, from /proc (robust to a busy machine)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: Sequence[float], fraction: float) -> float:
    """The value below which `fraction` of the sorted values fall (nearest rank)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[index]


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    """p50 / p95 / p99 / mean of durations in seconds, in milliseconds."""
    return {
        "p50": percentile(seconds, 0.50) * 1000,
        "p95": percentile(seconds, 0.95) * 1000,
        "p99": percentile(seconds, 0.99) * 1000,
        "mean": sum(seconds) / len(seconds) * 1000 if seconds else float("nan"),
        "n": len(seconds),
    }


def write_results(name: str, data: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, sort_keys=True))
    return path


def run_loop(coroutine: Any) -> Any:
    """Run a coroutine on uvloop when available (the client must cost less than the servers)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


# ---- processes ---------------------------------------------------------------------------------------

class _Process:
    process: subprocess.Popen

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def pids(self) -> list[int]:
        """The process and its children (uvicorn --workers N runs N children)."""
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        if not children.exists():
            return [self.pid]
        return [self.pid, *(int(pid) for pid in children.read_text().split())]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()


class Simulator(_Process):
    """`manage.py together_simulator` on a free port."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.process = subprocess.Popen(
            [PYTHON, "manage.py", "together_simulator", "--port", str(self.port)],
            cwd=ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL,
        )
        wait_until_ready(f"http://127.0.0.1:{self.port}/_sim/health", self.process)


class Dashboard(_Process):
    """The ASGI server (dashboard + proxy) under uvicorn as in the Procfile, on a fresh database."""

    def __init__(self, upstream: str, env: dict[str, str] | None = None, workers: int = 1) -> None:
        self.workers = workers
        self.var_dir = tempfile.mkdtemp(prefix="together-dash-bench-")
        self.metrics_token = secrets.token_urlsafe(24)
        # Its workers' series go to a folder of its own under var_dir (asgi.py), never one the caller set.
        inherited = {name: value for name, value in os.environ.items() if name != "PROMETHEUS_MULTIPROC_DIR"}
        self.env = {
            **inherited,
            "TOGETHER_DASH_VAR_DIR": self.var_dir,
            "TOGETHER_BASE_URL": upstream,
            "DEMO_MODE": "true",
            # As in production: DEBUG off, so the secrets must be given (one set for all the processes).
            "DEBUG": "false",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "FIELD_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
            "LOG_LEVEL": "WARNING",
            "METRICS_TOKEN": self.metrics_token,
            **(env or {}),
        }
        self._manage("migrate", "--noinput")
        self._manage("bootstrap")  # in demo mode: the "demo" upstream key
        self.port = free_port()
        self.root_url = f"http://127.0.0.1:{self.port}"
        self.base_url = f"{self.root_url}/v1"
        self.process = subprocess.Popen(
            [PYTHON, "-m", "uvicorn", "together_dash.asgi:application", "--host", "127.0.0.1",
             "--port", str(self.port), "--loop", "uvloop", "--http", "httptools", "--no-access-log",
             "--lifespan", "on", "--log-level", "warning", "--workers", str(workers)],
            cwd=ROOT, env=self.env,
        )
        wait_until_ready(f"{self.root_url}/healthz", self.process)

    def _manage(self, *args: str) -> str:
        result = subprocess.run([PYTHON, "manage.py", *args], cwd=ROOT, env=self.env, check=True,
                                capture_output=True, text=True)
        return result.stdout

    def create_app_key(self, name: str) -> str:
        return self._manage("create_app_key", name).strip()

    def metrics(self, series: str = "") -> str:
        """A scrape of /metrics with the server's token (series: "proxy" or "account" for one kind)."""
        params = {"series": series} if series else None
        headers = {"Authorization": f"Bearer {self.env['METRICS_TOKEN']}"}
        response = httpx.get(f"{self.root_url}/metrics", params=params, headers=headers, timeout=10)
        response.raise_for_status()
        return response.text

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self.var_dir, ignore_errors=True)


# ---- a client that costs (almost) nothing ------------------------------------------------------------

@dataclass
class Timing:
    status: int
    total: float  # seconds from sending the request to the last byte
    first_byte: float  # seconds to the first body byte (for streams: the first event)
    size: int
    body: bytes = b""  # a Content-Length body as read (streams are counted, not kept)


class RawClient:
    """Keep-alive HTTP/1.1 over one asyncio connection: far cheaper than any real client library."""

    def __init__(self, base_url: str, key: str) -> None:
        url = httpx.URL(base_url)
        self.host, self.port, self.prefix = url.host, url.port, url.path.rstrip("/")
        self.auth = f"Authorization: Bearer {key}\r\n"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def encode(self, method: str, path: str, body: dict[str, Any] | None = None,
               headers: dict[str, str] | None = None) -> bytes:
        """The bytes of one request, built once and sent many times."""
        extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        head = f"{method} {self.prefix}{path} HTTP/1.1\r\nHost: {self.host}\r\n{self.auth}{extra}"
        if body is None:
            return f"{head}\r\n".encode()
        payload = json.dumps(body).encode()
        length = f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        return f"{head}{length}".encode() + payload

    async def send(self, raw: bytes, *, sink_delay: float = 0.0) -> Timing:
        """Send one encoded request and read the whole response."""
        if self.writer is None:
            await self.connect()
        assert self.reader is not None and self.writer is not None
        started = time.perf_counter()
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lowered = head.lower()
        if b"content-length:" in lowered:
            at = lowered.index(b"content-length:") + 15
            body = await self.reader.readexactly(int(lowered[at:lowered.index(b"\r\n", at)]))
            now = time.perf_counter()
            return Timing(status, now - started, now - started, len(body), body)
        return await self._read_chunked(started, status, sink_delay)

    async def _read_chunked(self, started: float, status: int, sink_delay: float) -> Timing:
        assert self.reader is not None
        first_byte, size = 0.0, 0
        while True:
            length = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
            if length:
                await self.reader.readexactly(length + 2)
                size += length
                first_byte = first_byte or time.perf_counter() - started
                if sink_delay:
                    await asyncio.sleep(sink_delay)
            else:
                await self.reader.readexactly(2)
                return Timing(status, time.perf_counter() - started, first_byte, size)
