"""Poller fan-out: 100 keys polled (models, rate limits, fine-tunes) against a simulator answering in 100 ms.

    .venv/bin/python bench/poller_fanout.py [--keys 100] [--latency-ms 100] [--jobs 10] [--rounds 3]

Measured in one run, against the same simulator (its own process, `--latency-ms 100`):
  sequential baseline  one key's calls of the three polls made one after the other, times the key count
                       (what a loop over keys would take)
  bare fan-out         the same HTTP calls for every key through asyncio.gather (same concurrency as the
                       pollers), without any database work: the floor the pollers can approach
  pollers              poll_models, poll_rate_limits and poll_fine_tunes one after the other, as three
                       tasks would run, each writing its results (first round on an empty catalog)
The database is a scratch SQLite file, or with --postgres URL (or DATABASE_URL=postgres://...) a
scratch PostgreSQL database on that server, dropped at the end.
Target (DESIGN.md): all three polls for 100 keys within 5 s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import PYTHON, free_port, wait_until_ready, write_results  # noqa: E402

TARGET_SECONDS = 5.0
SCRATCH_DATABASE = "together_dash_bench_pollers"


def start_simulator(port: int, latency_ms: float, env: dict[str, str]) -> subprocess.Popen[bytes]:
    # Slow jobs: the fine-tunes stay active, so every round fetches their details and events.
    command = [
        PYTHON,
        "manage.py",
        "together_simulator",
        "--port",
        str(port),
        "--latency-ms",
        str(latency_ms),
        "--job-speed",
        "0.01",
    ]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    wait_until_ready(f"http://127.0.0.1:{port}/_sim/health", process)
    return process


def scratch_postgres(url: str) -> tuple[str, Callable[[], None]]:
    """Create an empty scratch database next to url's; return its URL and how to drop it."""
    import psycopg

    parts = urlsplit(url)
    maintenance = urlunsplit(parts._replace(path="/postgres"))
    scratch = urlunsplit(parts._replace(path=f"/{SCRATCH_DATABASE}"))
    with psycopg.connect(maintenance, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{SCRATCH_DATABASE}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{SCRATCH_DATABASE}"')

    def drop() -> None:
        from django.db import connections

        connections.close_all()
        with psycopg.connect(maintenance, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{SCRATCH_DATABASE}" WITH (FORCE)')

    return scratch, drop


def set_up_django(var_dir: str, database_url: str, base_url: str) -> None:
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "together_dash.settings",
            "TOGETHER_DASH_VAR_DIR": var_dir,
            "DATABASE_URL": database_url,
            "TOGETHER_BASE_URL": base_url,
            "LOG_LEVEL": "WARNING",
        }
    )
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def create_work(keys: int, jobs: int, base_url: str) -> None:
    """The upstream keys, and some running fine-tunes every key sees."""
    from together_dash.demo.jobs import start_fine_tune
    from together_dash.keys.models import TogetherKey
    from together_dash.pollers.testing import new_secret
    from together_dash.together.client import TogetherClient

    secrets = [new_secret() for _ in range(keys)]
    for number, secret in enumerate(secrets):
        TogetherKey.create(name=f"bench-{number:03d}", secret=secret)
    with TogetherClient(secrets[0], base_url=base_url) as client:
        for _ in range(jobs):
            start_fine_tune(client)


async def _one_key_sequential(client: Any) -> None:
    await client.list_models()  # poll_models
    await client.list_models()  # poll_rate_limits' probe
    await client.list_fine_tunes()  # poll_fine_tunes


def sequential_baseline(sample: int) -> float:
    """Seconds one key's calls take one after the other, averaged over `sample` keys, times the key count."""
    from together_dash.keys.models import TogetherKey
    from together_dash.pollers.fanout import FanOutConfig, key_refs, make_client

    refs, _ = key_refs(list(TogetherKey.objects.order_by("id")[:sample]))
    config = FanOutConfig.from_settings()

    async def run() -> list[float]:
        times = []
        for ref in refs:
            async with make_client(ref, config) as client:
                started = time.perf_counter()
                await _one_key_sequential(client)
                times.append(time.perf_counter() - started)
        return times

    per_key = statistics.mean(asyncio.run(run()))
    return per_key * TogetherKey.objects.count()


def bare_fan_out() -> float:
    """The same calls for every key, concurrently, with no database work: seconds."""
    from together_dash.keys.models import TogetherKey
    from together_dash.pollers.fanout import fan_out, key_refs

    refs, _ = key_refs(list(TogetherKey.objects.all()))

    async def models(client: Any, key: Any) -> None:
        await client.list_models()

    async def fine_tunes(client: Any, key: Any) -> None:
        await client.list_fine_tunes()

    started = time.perf_counter()
    for fetch in (models, models, fine_tunes):  # the three polls, one after the other
        outcomes = fan_out(refs, fetch)
        assert all(outcome.ok for outcome in outcomes), [o.error for o in outcomes if not o.ok][:1]
    return time.perf_counter() - started


def poll_round() -> dict[str, float]:
    """The three polls, as three tasks would run them: seconds each and in total."""
    from together_dash.catalog.polling import poll_models
    from together_dash.jobs.fine_tunes import poll_fine_tunes
    from together_dash.keys.rate_limits import poll_rate_limits

    timings: dict[str, float] = {}
    for poll in (poll_models, poll_rate_limits, poll_fine_tunes):
        started = time.perf_counter()
        report = poll()
        timings[poll.__name__] = time.perf_counter() - started
        if report.failed or not report.claimed:
            raise SystemExit(f"{report.summary()}: {report.errors[:1]}")
    timings["total"] = sum(timings.values())
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--keys", type=int, default=100)
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--jobs", type=int, default=10, help="active fine-tunes every key lists")
    parser.add_argument("--rounds", type=int, default=3)
    environment_db = os.environ.get("DATABASE_URL", "")
    parser.add_argument(
        "--postgres",
        default=environment_db if environment_db.startswith("postgres") else "",
        help="a postgres:// URL (default: DATABASE_URL when it is one): a scratch database on that server",
    )
    args = parser.parse_args()

    var_dir = tempfile.mkdtemp(prefix="together-dash-bench-pollers-")
    port = free_port()
    base_url = f"http://127.0.0.1:{port}/v1"
    env = {**os.environ, "TOGETHER_DASH_VAR_DIR": var_dir, "LOG_LEVEL": "WARNING"}
    env.pop("DATABASE_URL", None)
    simulator = start_simulator(port, args.latency_ms, env)
    drop: Callable[[], None] = lambda: None  # noqa: E731
    try:
        database_url = f"sqlite:///{var_dir}/bench.sqlite3"
        if args.postgres:
            database_url, drop = scratch_postgres(args.postgres)
        set_up_django(var_dir, database_url, base_url)
        create_work(args.keys, args.jobs, base_url)
        report(args, database_url, measure(args))
    finally:
        with suppress(Exception):
            drop()
        simulator.terminate()
        simulator.wait(timeout=20)
        shutil.rmtree(var_dir, ignore_errors=True)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from django.conf import settings

    sequential = sequential_baseline(sample=min(5, args.keys))
    bare = bare_fan_out()
    rounds = [poll_round() for _ in range(args.rounds)]
    return {
        "concurrency": settings.POLLER_CONCURRENCY,
        "sequential_baseline_s": sequential,
        "bare_fan_out_s": bare,
        "rounds": rounds,
    }


def report(args: argparse.Namespace, database_url: str, data: dict[str, Any]) -> None:
    worst = max(round_["total"] for round_ in data["rounds"])
    result = {
        "keys": args.keys,
        "latency_ms": args.latency_ms,
        "active_fine_tunes": args.jobs,
        "database": urlsplit(database_url).scheme,
        **data,
        "worst_round_s": worst,
        "target_s": TARGET_SECONDS,
        "meets_target": worst <= TARGET_SECONDS,
        "speedup_vs_sequential": data["sequential_baseline_s"] / worst,
        "overhead_vs_bare_fan_out": worst / data["bare_fan_out_s"],
    }
    path = write_results("poller_fanout", result)
    print(
        f"{args.keys} keys, upstream latency {args.latency_ms:.0f} ms, {result['database']}, "
        f"concurrency {data['concurrency']}"
    )
    print(f"  sequential baseline (1 key x {args.keys}) {data['sequential_baseline_s']:7.2f} s")
    print(f"  bare asyncio fan-out, no DB           {data['bare_fan_out_s']:7.2f} s")
    for number, round_ in enumerate(data["rounds"], start=1):
        parts = "  ".join(f"{name} {seconds:.2f}" for name, seconds in round_.items() if name != "total")
        print(f"  pollers round {number}                      {round_['total']:7.2f} s  ({parts})")
    verdict = "meets" if result["meets_target"] else "MISSES"
    print(
        f"  worst round {worst:.2f} s: {verdict} the {TARGET_SECONDS:.0f} s target; "
        f"{result['speedup_vs_sequential']:.0f}x faster than sequential, "
        f"{result['overhead_vs_bare_fan_out']:.2f}x the bare fan-out"
    )
    print(f"  results: {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
