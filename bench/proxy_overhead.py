"""What the proxy adds to a request: the same calls direct to the simulator and through the proxy.

Starts the simulator and the dashboard (uvicorn, as in the Procfile) as separate processes, then in the
same run measures, direct vs proxied:
  - sequential non-stream chat completions (alternating, one keep-alive connection each): p50/p95/p99
  - 64 concurrent clients (each its own keep-alive connection), in alternating rounds: p50/p95/p99
  - sequential streams: time to the first event (TTFT)
  - CPU time per request of each server process (steadier than latency on a shared machine)
Targets (DESIGN.md): sequential median added <= 1.5 ms; 64 concurrent p99 added <= 25 ms.
Writes bench/results/proxy_overhead.json.

With --otel, three dashboards instead of one, measured in the same run against the same simulator:
OpenTelemetry export off (the baseline), on to a live OTLP/HTTP receiver in this process (decoding every
export, as a collector would), and on to a collector that is down (a closed port); requests alternate
between them, so drift hits all alike. Writes bench/results/proxy_overhead_otel.json.

    .venv/bin/python bench/proxy_overhead.py [--sequential 2000] [--concurrent 64] [--per-client 50]
    .venv/bin/python bench/proxy_overhead.py --otel [--sequential 2000] [--concurrent 64] [--per-client 50]
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/metrics/otlp_receiver.py

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


# ---- --otel: export off, on to a live receiver, on to a collector that is down ---------------------------

OTEL_MODES = ("off", "live", "down")
DROPPED = re.compile(r'^together_dash_otel_dropped_total\{reason="(\w+)",signal="spans"\} (\S+)$', re.M)


@contextlib.contextmanager
def dead_collector() -> Iterator[str]:
    """The URL of a collector that is down: a port held bound but never listening refuses connections
    (held, so that no server started meanwhile, such as a dashboard, is given it)."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{held.getsockname()[1]}"


async def measure_otel(sim: Simulator, dashes: dict[str, Dashboard], keys: dict[str, str],
                       args: argparse.Namespace) -> dict[str, Any]:
    clients = {"direct": RawClient(sim.base_url, "bench")}
    clients |= {mode: RawClient(dash.base_url, keys[mode]) for mode, dash in dashes.items()}
    raws = {name: client.encode("POST", "/chat/completions", CHAT) for name, client in clients.items()}
    times: dict[str, list[float]] = {name: [] for name in clients}

    async def alternate(count: int, keep: bool) -> None:
        for _ in range(count):
            for name, client in clients.items():
                timing = await client.send(raws[name])
                if timing.status != 200:
                    raise SystemExit(f"{name}: unexpected status {timing.status}")
                if keep:
                    times[name].append(timing.total)

    await alternate(300, keep=False)  # warm up: connections, key caches, lazy imports, the exporters
    cpu_before = {mode: sum(cpu_seconds(pid) for pid in dash.pids) for mode, dash in dashes.items()}
    await alternate(args.sequential, keep=True)
    cpu = {mode: (sum(cpu_seconds(pid) for pid in dash.pids) - cpu_before[mode]) / args.sequential * 1e6
           for mode, dash in dashes.items()}
    concurrent_times: dict[str, list[float]] = {name: [] for name in clients}
    for _ in range(ROUNDS):
        for name in clients:
            base_url = sim.base_url if name == "direct" else dashes[name].base_url
            key = "bench" if name == "direct" else keys[name]
            per_client = args.per_client // ROUNDS
            concurrent_times[name] += await concurrent(base_url, key, args.concurrent, per_client)
    return {
        "cpu_us_per_request": cpu,
        "sequential": {name: summary_ms(values) for name, values in times.items()},
        f"concurrent_{args.concurrent}": {
            name: summary_ms(values) for name, values in concurrent_times.items()
        },
    }


def dropped_spans(dash: Dashboard) -> dict[str, float]:
    return {reason: float(value) for reason, value in DROPPED.findall(dash.metrics("proxy"))}


def report_otel(results: dict[str, Any]) -> None:
    print(f"{'measure':<16}{'stat':>6}" + "".join(f"{name + ' ms':>12}" for name in ("direct", *OTEL_MODES))
          + f"{'live/off':>10}{'down/off':>10}")
    for name, by_mode in results.items():
        if not (name == "sequential" or name.startswith("concurrent")):
            continue
        for stat in ("p50", "p95", "p99"):
            row = "".join(f"{by_mode[mode][stat]:>12.3f}" for mode in ("direct", *OTEL_MODES))
            off = by_mode["off"][stat]
            ratios = "".join(f"{by_mode[mode][stat] / off:>10.2f}" for mode in ("live", "down"))
            print(f"{name:<16}{stat:>6}{row}{ratios}")
    cpu = results["cpu_us_per_request"]
    print("proxy CPU per request: " + ", ".join(f"{mode} {cpu[mode]:.0f} us" for mode in OTEL_MODES)
          + f" (live/off {cpu['live'] / cpu['off']:.2f}, down/off {cpu['down'] / cpu['off']:.2f})")
    print(f"spans: {results['spans_received']} received live; dropped with the collector down: "
          f"{results['dropped_down']}")


def main_otel(args: argparse.Namespace) -> None:
    from tests.metrics.otlp_receiver import OtlpReceiver

    with contextlib.ExitStack() as stack:
        receiver = stack.enter_context(OtlpReceiver())
        env = {"off": {}, "live": {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url},
               "down": {"OTEL_EXPORTER_OTLP_ENDPOINT": stack.enter_context(dead_collector())}}
        sim = stack.enter_context(Simulator())
        dashes = {mode: stack.enter_context(Dashboard(upstream=sim.base_url, env=env[mode],
                                                      workers=args.workers)) for mode in OTEL_MODES}
        keys = {mode: dash.create_app_key("bench") for mode, dash in dashes.items()}
        results = run_loop(measure_otel(sim, dashes, keys, args))
        results["dropped_down"] = dropped_spans(dashes["down"])
        results["spans_received"] = len(receiver.spans)
    report_otel(results)
    path = write_results("proxy_overhead_otel", {"results": results, "args": vars(args)})
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequential", type=int, default=2000)
    parser.add_argument("--streams", type=int, default=300)
    parser.add_argument("--concurrent", type=int, default=64)
    parser.add_argument("--per-client", type=int, default=50)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (Procfile: 1)")
    parser.add_argument("--otel", action="store_true",
                        help="OpenTelemetry export: off, to a live receiver, to a collector that is down")
    args = parser.parse_args()
    if args.otel:
        main_otel(args)
        return
    with Simulator() as sim, Dashboard(upstream=sim.base_url, workers=args.workers) as dash:
        key = dash.create_app_key("bench")
        results = run_loop(measure(sim, dash, key, args))
    verdict = report(results)
    path = write_results("proxy_overhead", {"results": results, "verdict": verdict, "args": vars(args)})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
