"""How many requests per second the simulator serves: a sanity check, not a test.

Starts `manage.py together_simulator` in its own process (one core), then drives it with concurrent
httpx clients (in `--procs` processes) and prints req/s for chat completions, streamed chat
completions and GET /models. An httpx client tops out around 1,000 req/s per process, well below
the simulator, so the script also measures with a minimal keep-alive HTTP/1.1 client on raw asyncio
sockets: that figure is the simulator's own ceiling.

    .venv/bin/python bench/simulator_throughput.py [--requests 20000] [--concurrency 16] [--procs 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
CHAT = {
    "model": "meta-llama/Meta-Llama-3.1-8B-Instruct-Turbo",
    "messages": [{"role": "user", "content": "hi"}],
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_simulator(port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "manage.py"), "together_simulator", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/_sim/health", timeout=0.5).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("the simulator did not start")


async def drive(base_url: str, kind: str, requests: int, concurrency: int) -> int:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"Authorization": "Bearer bench"}
    done = 0
    async with httpx.AsyncClient(base_url=base_url, limits=limits, headers=headers, timeout=30) as client:

        async def worker(count: int) -> None:
            nonlocal done
            for _ in range(count):
                if kind == "models":
                    response = await client.get("/models")
                elif kind == "stream":
                    async with client.stream(
                        "POST", "/chat/completions", json={**CHAT, "stream": True}
                    ) as response:
                        async for _ in response.aiter_bytes():
                            pass
                else:
                    response = await client.post("/chat/completions", json=CHAT)
                response.raise_for_status()
                done += 1

        share, rest = divmod(requests, concurrency)
        await asyncio.gather(*(worker(share + (1 if i < rest else 0)) for i in range(concurrency)))
    return done


async def drive_raw(base_url: str, kind: str, requests: int, concurrency: int) -> int:
    """Keep-alive HTTP/1.1 over raw sockets: near-zero client cost, so the server is what is measured."""
    url = httpx.URL(base_url)
    head = f"Host: {url.host}\r\nAuthorization: Bearer bench\r\n"
    if kind == "models":
        raw = f"GET {url.path}/models HTTP/1.1\r\n{head}\r\n".encode()
    else:
        body = json.dumps({**CHAT, "stream": kind == "stream"}).encode()
        raw = (
            f"POST {url.path}/chat/completions HTTP/1.1\r\n{head}Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body

    async def worker(count: int) -> int:
        reader, writer = await asyncio.open_connection(url.host, url.port)
        for _ in range(count):
            writer.write(raw)
            await _read_response(reader)
        writer.close()
        return count

    share = requests // concurrency
    return sum(await asyncio.gather(*(worker(share) for _ in range(concurrency))))


async def _read_response(reader: asyncio.StreamReader) -> None:
    head = (await reader.readuntil(b"\r\n\r\n")).lower()
    if b"content-length:" in head:
        start = head.index(b"content-length:") + 15
        await reader.readexactly(int(head[start : head.index(b"\r\n", start)]))
        return
    while True:  # chunked (the SSE streams)
        size = int((await reader.readuntil(b"\r\n")).strip(), 16)
        await reader.readexactly(size + 2)
        if size == 0:
            return


def _run(coroutine: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def client_process(args: tuple[str, str, str, int, int]) -> int:
    client, *rest = args
    return _run((drive_raw if client == "raw" else drive)(*rest))  # type: ignore[arg-type]


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU time of a process (Linux /proc), or None where that is not available."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, TypeError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(
    client: str, base_url: str, kind: str, requests: int, concurrency: int, procs: int, pid: int | None
) -> tuple[float, float | None]:
    """Requests per wall-clock second, and per second of the simulator's own CPU time (when known).

    The second figure is what one dedicated core would serve; it does not depend on what else the
    machine is doing, which the wall-clock figure does.
    """
    _run(drive(base_url, kind, min(500, requests), concurrency))  # warm up
    jobs = [(client, base_url, kind, requests // procs, max(1, concurrency // procs)) for _ in range(procs)]
    cpu_before = cpu_seconds(pid)
    started = time.perf_counter()
    with multiprocessing.Pool(procs) as pool:
        total = sum(pool.map(client_process, jobs))
    elapsed = time.perf_counter() - started
    cpu_after = cpu_seconds(pid)
    per_cpu = total / (cpu_after - cpu_before) if cpu_before is not None and cpu_after != cpu_before else None
    return total / elapsed, per_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--client", choices=("httpx", "raw", "both"), default="both")
    parser.add_argument("--procs", type=int, default=1, help="client processes")
    parser.add_argument("--base-url", default="", help="measure an already running simulator instead")
    args = parser.parse_args()
    process = None
    base_url = args.base_url
    if not base_url:
        port = free_port()
        process = start_simulator(port)
        base_url = f"http://127.0.0.1:{port}/v1"
    try:
        clients = ("httpx", "raw") if args.client == "both" else (args.client,)
        for client in clients:
            for kind in ("chat", "stream", "models"):
                pid = process.pid if process is not None else None
                rate, per_cpu = measure(
                    client, base_url, kind, args.requests, args.concurrency, args.procs, pid
                )
                per_core = f", {per_cpu:,.0f} per simulator CPU-second" if per_cpu else ""
                print(
                    f"{client:>5} client {kind:>6}: {rate:,.0f} requests/s{per_core}  ({args.requests} "
                    f"requests, {args.concurrency} concurrent, {args.procs} client process(es))"
                )
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=10)


if __name__ == "__main__":
    main()
