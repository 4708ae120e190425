"""The proxy's memory: flat over many requests, and a 50 MB stream never held whole.

Starts the simulator and the dashboard (uvicorn, as in the Procfile) as separate processes, then:
  - sends --requests requests (mostly chat, some streams and embeddings) through the proxy from
    --concurrency clients, sampling the proxy's RSS as it goes: start (after a warm-up), end, max;
    target: end within 10% of start;
  - streams one 50 MB chat completion through the proxy, once read at full speed and once by a slow
    reader, sampling RSS every 20 ms; target: the peak rise stays far below 50 MB. The baseline is
    the proxy's own RSS just before each stream.
Writes bench/results/proxy_memory.json.

    .venv/bin/python bench/proxy_memory.py [--requests 100000] [--concurrency 32] [--stream-mb 50]
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Dashboard, RawClient, Simulator, rss_bytes, run_loop, write_results  # noqa: E402

MB = 1024 * 1024
CHAT = {
    "model": "meta-llama/Meta-Llama-3.1-8B-Instruct-Turbo",
    "messages": [{"role": "user", "content": "hi"}],
}
EMBED = {"model": "BAAI/bge-large-en-v1.5", "input": ["a short text", "another one"]}
WARM_UP = 2000
TARGET_GROWTH = 0.10


class RssSampler:
    """Samples a process's RSS in a thread; keeps the max and a timeline."""

    def __init__(self, pid: int, every: float) -> None:
        self.pid, self.every = pid, every
        self.max = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.max = max(self.max, rss_bytes(self.pid))
            time.sleep(self.every)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def many_requests(base_url: str, key: str, total: int, concurrency: int, pid: int) -> dict[str, Any]:
    """`total` mixed requests; RSS after the warm-up, every 10% of the way, and at the end."""
    done = 0
    timeline: list[tuple[int, int]] = []
    next_sample = WARM_UP

    async def client() -> None:
        nonlocal done, next_sample
        raw = RawClient(base_url, key)
        mix = [raw.encode("POST", "/chat/completions", CHAT)] * 8 + [
            raw.encode("POST", "/chat/completions", {**CHAT, "stream": True}),
            raw.encode("POST", "/embeddings", EMBED),
        ]
        i = 0
        while done < total:
            timing = await raw.send(mix[i % len(mix)])
            if timing.status != 200:
                raise SystemExit(f"unexpected status {timing.status}")
            i, done = i + 1, done + 1
            if done >= next_sample:
                next_sample += max(1, (total - WARM_UP) // 10)
                timeline.append((done, rss_bytes(pid)))
        await raw.close()

    await asyncio.gather(*(client() for _ in range(concurrency)))
    timeline.append((done, rss_bytes(pid)))
    start, end = timeline[0][1], timeline[-1][1]
    return {
        "requests": done,
        "rss_start_mb": start / MB,
        "rss_end_mb": end / MB,
        "rss_max_mb": max(rss for _, rss in timeline) / MB,
        "growth_ratio": end / start,
        "timeline_mb": [(count, rss / MB) for count, rss in timeline],
    }


async def one_big_stream(base_url: str, key: str, size: int, sink_delay: float) -> tuple[int, float]:
    client = RawClient(base_url, key)
    headers = {"X-Simulate-Output-Bytes": str(size), "X-Simulate-Chunk-Bytes": "16384"}
    raw = client.encode("POST", "/chat/completions", {**CHAT, "stream": True}, headers)
    started = time.perf_counter()
    timing = await client.send(raw, sink_delay=sink_delay)
    await client.close()
    return timing.size, time.perf_counter() - started


def big_stream(base_url: str, key: str, pid: int, size: int, sink_delay: float) -> dict[str, Any]:
    before = rss_bytes(pid)
    with RssSampler(pid, 0.02) as sampler:
        received, seconds = run_loop(one_big_stream(base_url, key, size, sink_delay))
    return {
        "bytes_received": received,
        "seconds": seconds,
        "rss_before_mb": before / MB,
        "rss_peak_mb": sampler.max / MB,
        "peak_rise_mb": (sampler.max - before) / MB,
        "peak_rise_vs_stream_size": (sampler.max - before) / size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--stream-mb", type=int, default=50)
    args = parser.parse_args()
    size = args.stream_mb * MB
    with Simulator() as sim, Dashboard(upstream=sim.base_url) as dash:
        key = dash.create_app_key("bench-memory")
        flat = run_loop(many_requests(dash.base_url, key, args.requests, args.concurrency, dash.pid))
        fast = big_stream(dash.base_url, key, dash.pid, size, 0.0)
        slow = big_stream(dash.base_url, key, dash.pid, size, 0.002)
    results = {"many_requests": flat, "stream_fast_reader": fast, "stream_slow_reader": slow,
               "args": vars(args)}
    verdict = "met" if flat["growth_ratio"] <= 1 + TARGET_GROWTH else "MISSED"
    print(f"RSS over {flat['requests']:,} requests: start {flat['rss_start_mb']:.1f} MB, "
          f"end {flat['rss_end_mb']:.1f} MB, max {flat['rss_max_mb']:.1f} MB, "
          f"end/start {flat['growth_ratio']:.3f} (target <= {1 + TARGET_GROWTH:.2f}): {verdict}")
    for name, run in (("fast reader", fast), ("slow reader", slow)):
        wire, seconds = run["bytes_received"] / MB, run["seconds"]
        print(f"stream of {args.stream_mb} MB content ({wire:.1f} MB of events), {name}, {seconds:.1f} s: "
              f"proxy RSS {run['rss_before_mb']:.1f} -> peak {run['rss_peak_mb']:.1f} MB "
              f"(rise {run['peak_rise_mb']:.1f} MB, {run['peak_rise_vs_stream_size']:.1%} of the content)")
    print(f"wrote {write_results('proxy_memory', results)}")


if __name__ == "__main__":
    main()
