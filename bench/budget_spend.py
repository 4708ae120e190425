"""App-key budget spend at scale: the per-app-key hour rollup against summing the key's request logs.

An app-key budget needs the key's spend for its month. The usage rollups are keyed by upstream key and
model, so the choice was a rollup keyed by app key (AppKeySpendHour, at most 744 rows a month) or a
bounded query on the request log through its (app_key, created_at) index. This loads N request logs of
one app key over the current month into a scratch PostgreSQL database (its own, never another
benchmark's), then times, in the same run, budgets.spend.budget_status() (the rollup) and the
request-log sum it replaced (the baseline), checks that both give the same Decimal, and prints the ratio.

    .venv/bin/python bench/budget_spend.py [--sizes 10000,1000000] [--postgres URL] [--runs 30]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import PYTHON, ROOT, summary_ms, write_results  # noqa: E402

DEFAULT_POSTGRES = "postgres://postgres@127.0.0.1:5432/postgres"
TARGET_MS = 150.0  # DESIGN.md's page budget at 10 million logs


def database_url(base: str, name: str) -> str:
    parts = urlsplit(base)
    return urlunsplit(parts._replace(path=f"/{name}"))


def recreate_database(base: str, name: str) -> None:
    import psycopg

    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')


def measure_one(size: int, runs: int) -> dict:
    """In a process whose DATABASE_URL names the scratch database: migrate, load, time both reads."""
    sys.path.insert(0, str(ROOT))
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "together_dash.settings")
    django.setup()
    from decimal import Decimal

    from django.core.management import call_command
    from django.db import connection
    from django.db.models import Count, Sum

    from together_dash.budgets.models import Budget
    from together_dash.budgets.spend import budget_status
    from together_dash.keys.models import TogetherKey
    from together_dash.keys.services import create_app_key
    from together_dash.traffic.models import AppKeySpendHour, RequestLog

    call_command("migrate", verbosity=0)
    upstream = TogetherKey.create("bench", "tk-bench-secret-000000000000001")
    app_key, _ = create_app_key("bench-app", upstream=upstream)
    budget = Budget.objects.create(name="bench", scope="app_key", app_key=app_key, amount_usd=Decimal("1000"))
    start, resets_at = budget.period_bounds()
    loaded = time.monotonic()
    with connection.cursor() as cursor:
        # Spread over the month so far; every column the table has no default for is given.
        cursor.execute(
            """
            INSERT INTO traffic_requestlog (created_at, source, app_key_id, upstream_key_id, key_fingerprint,
                method, endpoint, model_requested, model_served, stream, status_code, latency_ms,
                prompt_tokens, completion_tokens, total_tokens, cost_usd, request_id, category, kind,
                error_message)
            SELECT %s::timestamptz + (now() - %s::timestamptz) * (i::float8 / %s), 'proxy', %s, %s, '',
                'POST', '/v1/chat/completions', 'meta-llama/Llama-3.3-70B-Instruct-Turbo', '', false, 200,
                50, 100, 20, 120, 0.00012345, '', '', '', ''
            FROM generate_series(1, %s) AS i
            """,
            [start, start, size + 1, app_key.pk, upstream.pk, size],
        )
        cursor.execute(
            """
            INSERT INTO traffic_appkeyspendhour (bucket, app_key_id, requests, cost_usd, unpriced_requests)
            SELECT date_trunc('hour', created_at), app_key_id, count(*), sum(cost_usd), 0
            FROM traffic_requestlog WHERE app_key_id IS NOT NULL GROUP BY 1, 2
            """
        )
        cursor.execute("ANALYZE")
    load_seconds = time.monotonic() - loaded

    def from_logs() -> tuple[Decimal, int]:
        rows = RequestLog.objects.filter(
            app_key_id=app_key.pk, created_at__gte=start, created_at__lt=resets_at
        )
        sums = rows.aggregate(cost=Sum("cost_usd"), n=Count("id"))
        return Decimal(sums["cost"] or 0), sums["n"]

    def from_rollup() -> tuple[Decimal, int]:
        spend = budget_status(budget).spend
        return spend.cost_usd, spend.requests

    assert from_rollup() == from_logs(), (from_rollup(), from_logs())
    timings: dict[str, list[float]] = {"rollup": [], "request_log": []}
    for _ in range(runs):
        for name, read in (("rollup", from_rollup), ("request_log", from_logs)):
            began = time.perf_counter()
            read()
            timings[name].append(time.perf_counter() - began)
    return {
        "size": size,
        "load_seconds": round(load_seconds, 1),
        "hour_rows": AppKeySpendHour.objects.count(),
        "spend_usd": str(from_rollup()[0]),
        "rollup_ms": summary_ms(timings["rollup"]),
        "request_log_ms": summary_ms(timings["request_log"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,1000000")
    parser.add_argument("--postgres", default=os.environ.get("BENCH_POSTGRES_URL", DEFAULT_POSTGRES))
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure_one(args.one, args.runs)))
        return
    results, figures = [], []
    for size in (int(s) for s in args.sizes.split(",")):
        name = f"together_dash_bench_budgets_{size}"
        recreate_database(args.postgres, name)
        env = {**os.environ, "DATABASE_URL": database_url(args.postgres, name), "DEBUG": "true",
               "TOGETHER_DASH_VAR_DIR": tempfile.mkdtemp(prefix="bench-budgets-")}
        done = subprocess.run([PYTHON, __file__, "--one", str(size), "--runs", str(args.runs)], cwd=ROOT,
                              env=env, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"size {size} failed:\n{done.stderr[-3000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        results.append(result)
        rollup, logs = result["rollup_ms"]["p95"], result["request_log_ms"]["p95"]
        print(f"{size:>10,} logs: budget spend p95 {rollup:.2f} ms from the app-key hour rollup "
              f"({result['hour_rows']} rows), {logs:.2f} ms summing the request log: {logs / rollup:.1f}x")
        figures.append({
            "figure": f"app-key budget spend p95 at {size:,} logs, ms",
            "value": rollup, "baseline": logs, "ratio": round(logs / rollup, 1),
            "target": f"<= {TARGET_MS:.0f} ms", "meets_target": rollup <= TARGET_MS,
        })
    path = write_results("budget_spend", {"results": results, "figures": figures})
    print(f"results: {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
