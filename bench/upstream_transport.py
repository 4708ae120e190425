"""The proxy's upstream transports against each other: one dashboard per transport, in the same run.

Starts one simulator and one dashboard (uvicorn, one worker, as in the Procfile) per transport named
(PROXY_UPSTREAM_TRANSPORT), then, interleaved so that drift hits all alike (bench/proxy_peers.py's
measuring code):
  - sequential non-stream chat completions (direct, then each dashboard in turn): p50/p95/p99 added
  - 64 concurrent clients (--concurrency), in alternating rounds: p50/p95/p99 added over direct
  - CPU time per request of each dashboard process
Writes bench/results/upstream_transport.json.

    .venv/bin/python bench/upstream_transport.py [--transports lean aiohttp httpx] [--sequential 1000]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Dashboard, Simulator, _Process, run_loop, summary_ms, write_results  # noqa: E402
from proxy_peers import CHAT, Target, concurrent_rounds, process_cpu, sequential  # noqa: E402


async def measure(targets: list[Target], processes: dict[str, _Process], args: argparse.Namespace
                  ) -> dict[str, Any]:
    clients = [target.client() for target in targets]
    await sequential(targets, clients, CHAT, 200)  # warm up: connections, key caches, lazy imports
    before = process_cpu(processes)
    seq = await sequential(targets, clients, CHAT, args.sequential)
    after = process_cpu(processes)
    cpu_us = {name: (after[name] - before[name]) / args.sequential * 1e6 for name in processes}
    results: dict[str, Any] = {"cpu_us_per_request": cpu_us, "sequential": added(seq)}
    for count in args.concurrency:
        results[f"concurrent_{count}"] = added(await concurrent_rounds(targets, count, args.per_client))
    return results


def added(times: dict[str, list[float]]) -> dict[str, Any]:
    result: dict[str, Any] = {name: summary_ms(values) for name, values in times.items()}
    for name in times:
        if name != "direct":
            result[name]["added_ms"] = {stat: result[name][stat] - result["direct"][stat]
                                        for stat in ("p50", "p95", "p99")}
    return result


def report(results: dict[str, Any], transports: list[str]) -> None:
    print(f"{'measure':<16}{'transport':>10}{'p50 added':>11}{'p95 added':>11}{'p99 added':>11}")
    for name, row in results.items():
        if name == "cpu_us_per_request":
            continue
        for transport in transports:
            stats = row[transport]["added_ms"]
            print(f"{name:<16}{transport:>10}{stats['p50']:>11.3f}{stats['p95']:>11.3f}{stats['p99']:>11.3f}")
    cpu = results["cpu_us_per_request"]
    print("CPU per request, us: " + ", ".join(f"{name} {value:.0f}" for name, value in cpu.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transports", nargs="+", default=["lean", "aiohttp"])
    parser.add_argument("--sequential", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[64])
    parser.add_argument("--per-client", type=int, default=50)
    args = parser.parse_args()
    with Simulator() as sim:
        dashboards = {name: Dashboard(upstream=sim.base_url, env={"PROXY_UPSTREAM_TRANSPORT": name})
                      for name in args.transports}
        try:
            targets = [Target("direct", sim.base_url, "bench")]
            targets += [Target(name, dash.base_url, dash.create_app_key("bench"))
                        for name, dash in dashboards.items()]
            results = run_loop(measure(targets, {"simulator": sim, **dashboards}, args))
        finally:
            for dash in dashboards.values():
                dash.stop()
    report(results, args.transports)
    path = write_results("upstream_transport", {"results": results, "args": vars(args)})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
