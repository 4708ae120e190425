"""What the proxy adds to a request: the same calls direct to the simulator and through the proxy.

Starts the simulator and the dashboard (uvicorn, as in the Procfile) as separate processes, then in the
same run measures, direct vs proxied:
  - sequential non-stream chat completions (alternating, one keep-alive connection each): p50/p95/p99
  - 64 concurrent clients (each its own keep-alive connection), in alternating rounds: p50/p95/p99
  - sequential streams: time to the first event (TTFT)
  - CPU time per request of each server process (steadier than latency on a shared machine)
Targets (DESIGN.md): sequential median added <= 1.5 ms; 64 concurrent p99 added <= 25 ms.
Writes bench/results/proxy_overhead.json.

    .venv/bin/python bench/proxy_overhead.py [--sequential 2000] [--concurrent 64] [--per-client 50]
"""
from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    Dashboard,
    RawClient,
    Simulator,
    cpu_seconds,
    run_loop,
    summary_ms,
    write_results,
)

CHAT = {
    "model": "meta-llama/Meta-Llama-3.1-8B-Instruct-Turbo",
    "messages": [{"role": "user", "content": "hi"}],
}
STREAM = {**CHAT, "stream": True}
TARGET_SEQUENTIAL_MEDIAN_MS = 1.5
TARGET_CONCURRENT_P99_MS = 25.0
ROUNDS = 5


async def sequential(direct: RawClient, proxied: RawClient, body: dict[str, Any], count: int,
                     *, first_byte: bool = False) -> tuple[list[float], list[float]]:
    """Alternate direct and proxied requests so that drift hits both alike."""
    times: tuple[list[float], list[float]] = ([], [])
    requests = tuple(client.encode("POST", "/chat/completions", body) for client in (direct, proxied))
    for _ in range(count):
        for client, raw, into in zip((direct, proxied), requests, times, strict=True):
            timing = await client.send(raw)
            if timing.status != 200:
                raise SystemExit(f"unexpected status {timing.status}")
            into.append(timing.first_byte if first_byte else timing.total)
    return times


async def concurrent(base_url: str, key: str, clients: int, per_client: int) -> list[float]:
    """`clients` connections, each sending `per_client` requests back to back."""
    async def one() -> list[float]:
        client = RawClient(base_url, key)
        raw = client.encode("POST", "/chat/completions", CHAT)
        await client.connect()
        times = []
        for _ in range(per_client):
            timing = await client.send(raw)
            if timing.status != 200:
                raise SystemExit(f"unexpected status {timing.status}")
            times.append(timing.total)
        await client.close()
        return times

    results = await asyncio.gather(*(one() for _ in range(clients)))
    return [t for times in results for t in times]


async def measure(sim: Simulator, dash: Dashboard, key: str, args: argparse.Namespace) -> dict[str, Any]:
    direct, proxied = RawClient(sim.base_url, "bench"), RawClient(dash.base_url, key)
    await sequential(direct, proxied, CHAT, 300)  # warm up both: connections, key cache, lazy imports
    cpu_before = cpu_seconds(sim.pid), sum(cpu_seconds(pid) for pid in dash.pids)
    seq_direct, seq_proxied = await sequential(direct, proxied, CHAT, args.sequential)
    # Each server's own CPU per request: unlike latency, it does not move when the machine is busy.
    sim_cpu = (cpu_seconds(sim.pid) - cpu_before[0]) / (2 * args.sequential) * 1e6
    proxy_cpu = (sum(cpu_seconds(pid) for pid in dash.pids) - cpu_before[1]) / args.sequential * 1e6
    ttft_direct, ttft_proxied = await sequential(direct, proxied, STREAM, args.streams, first_byte=True)
    await concurrent(sim.base_url, "bench", args.concurrent, 10)
    await concurrent(dash.base_url, key, args.concurrent, 10)
    conc_direct, conc_proxied = [], []
    for _ in range(ROUNDS):  # alternating rounds, so that a busy moment of the machine hits both alike
        conc_direct += await concurrent(sim.base_url, "bench", args.concurrent, args.per_client // ROUNDS)
        conc_proxied += await concurrent(dash.base_url, key, args.concurrent, args.per_client // ROUNDS)
    print(f"CPU per request: simulator {sim_cpu:.0f} us, proxy process {proxy_cpu:.0f} us "
          f"(ratio {proxy_cpu / sim_cpu:.2f}; includes writing the request logs)")
    return {
        "cpu_us_per_request": {"simulator": sim_cpu, "proxy": proxy_cpu},
        "sequential": {"direct": summary_ms(seq_direct), "proxy": summary_ms(seq_proxied)},
        "ttft_stream": {"direct": summary_ms(ttft_direct), "proxy": summary_ms(ttft_proxied)},
        f"concurrent_{args.concurrent}": {
            "direct": summary_ms(conc_direct), "proxy": summary_ms(conc_proxied),
        },
    }


def report(results: dict[str, Any]) -> dict[str, Any]:
    print(f"{'measure':<16}{'stat':>6}{'direct ms':>12}{'proxy ms':>12}{'added ms':>11}{'ratio':>8}")
    verdict = {}
    for name, pair in results.items():
        if "direct" not in pair:
            continue
        for stat in ("p50", "p95", "p99"):
            direct, proxy = pair["direct"][stat], pair["proxy"][stat]
            pair.setdefault("added_ms", {})[stat] = proxy - direct
            added, ratio = proxy - direct, proxy / direct
            print(f"{name:<16}{stat:>6}{direct:>12.3f}{proxy:>12.3f}{added:>11.3f}{ratio:>8.2f}")
    sequential_added = results["sequential"]["added_ms"]["p50"]
    concurrent_added = next(v for k, v in results.items() if k.startswith("concurrent"))["added_ms"]["p99"]
    verdict["sequential_median_added_ms"] = sequential_added
    verdict["sequential_target_met"] = sequential_added <= TARGET_SEQUENTIAL_MEDIAN_MS
    verdict["concurrent_p99_added_ms"] = concurrent_added
    verdict["concurrent_target_met"] = concurrent_added <= TARGET_CONCURRENT_P99_MS
    print(f"sequential median added {sequential_added:.3f} ms (target <= {TARGET_SEQUENTIAL_MEDIAN_MS}): "
          f"{'met' if verdict['sequential_target_met'] else 'MISSED'}")
    print(f"concurrent p99 added {concurrent_added:.3f} ms (target <= {TARGET_CONCURRENT_P99_MS}): "
          f"{'met' if verdict['concurrent_target_met'] else 'MISSED'}")
    return verdict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequential", type=int, default=2000)
    parser.add_argument("--streams", type=int, default=300)
    parser.add_argument("--concurrent", type=int, default=64)
    parser.add_argument("--per-client", type=int, default=50)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (Procfile: 1)")
    args = parser.parse_args()
    with Simulator() as sim, Dashboard(upstream=sim.base_url, workers=args.workers) as dash:
        key = dash.create_app_key("bench")
        results = run_loop(measure(sim, dash, key, args))
    verdict = report(results)
    path = write_results("proxy_overhead", {"results": results, "verdict": verdict, "args": vars(args)})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
