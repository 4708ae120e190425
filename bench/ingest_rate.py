"""Ingest rate: request-log rows per second into PostgreSQL, against plain COPY in the same run.

    .venv/bin/python bench/ingest_rate.py [--rows 50000] [--repeats 3]

Measured, each on an emptied table, with the same generated rows, best of --repeats interleaved runs:
  baseline        psycopg binary COPY into a bare table (no index, no constraint, no rollup, no group)
  proxy batches   record_entries() in batches of 500 without client ids, as the proxy's log writer calls it
  ingest batches  record_entries() in batches of 1,000 and of 5,000 with client ids (idempotent path)
  http ingest     POST /api/ingest with 1,000-record JSON bodies: one uvicorn process with 2 clients, and
                  one process per CPU (uvicorn --workers) with 2 clients each, as a machine is deployed
Every path but the baseline stores the rows with their error groups and minute/hour rollups. The
database is a scratch one (together_dash_bench) on the server DATABASE_URL points at, dropped at the end.
Target (DESIGN.md): >= 20,000 rows/s into PostgreSQL.
"""
from __future__ import annotations

import argparse
import os
import random
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
from cryptography.fernet import Fernet

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Dashboard, write_results  # noqa: E402

BENCH_DATABASE = "together_dash_bench"
TARGET_ROWS_PER_SECOND = 20_000
MODELS = [
    "meta-llama/Llama-3.3-70B-Instruct-Turbo", "meta-llama/Meta-Llama-3.1-8B-Instruct-Turbo",
    "Qwen/Qwen2.5-72B-Instruct-Turbo", "deepseek-ai/DeepSeek-V3", "mistralai/Mixtral-8x7B-Instruct-v0.1",
    "google/gemma-2-27b-it", "BAAI/bge-large-en-v1.5", "black-forest-labs/FLUX.1-schnell",
]
# (share, status, error body or None): mostly successes, then the errors on-call sees most.
OUTCOMES = [
    (0.94, 200, None),
    (0.025, 429, {"error": {"message": "You have been rate limited.", "type": "dynamic_request_limited"}}),
    (0.01, 503, {"error": {"message": "The server is overloaded or not ready yet.", "type": "server_error"}}),
    (0.01, 400, {"error": {"message": "Input validation error: `inputs` tokens + `max_new_tokens` must be "
                                      "<= 8193. Given: 9000 `inputs` tokens and 512 `max_new_tokens`",
                           "type": "invalid_request_error", "param": "max_tokens"}}),
    (0.01, 500, {"error": {"message": "Internal server error", "type": "server_error"}}),
    (0.005, 404, {"error": {"message": "Unable to access model x. Please visit https://api.together.xyz",
                            "type": "invalid_request_error", "code": "model_not_found"}}),
]
# No 402 in the mix: credits run out for a whole account at once, not for one request in two hundred
# (sprinkled 402s would make the billing alert fire and resolve on every batch, which is not ingest).


def database_urls() -> tuple[str, str]:
    """(the server's maintenance URL, the scratch bench database URL)."""
    base = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
    parts = urlsplit(base)
    if not parts.scheme.startswith("postgres"):
        raise SystemExit("ingest_rate measures PostgreSQL: set DATABASE_URL=postgres://...")
    return urlunsplit(parts._replace(path="/postgres")), urlunsplit(parts._replace(path=f"/{BENCH_DATABASE}"))


def recreate_database(admin_url: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DATABASE} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {BENCH_DATABASE}")


def drop_database(admin_url: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DATABASE} WITH (FORCE)")


# ---- generated traffic -------------------------------------------------------------------------------

def records(count: int, seed: int, start: datetime) -> list[dict]:
    """Ingest-API records, time-ordered over the last minutes, like a busy team's traffic."""
    rng = random.Random(seed)
    weights = [share for share, _, _ in OUTCOMES]
    out = []
    for n in range(count):
        _, status, error = rng.choices(OUTCOMES, weights)[0]
        prompt = int(rng.lognormvariate(6, 1)) if status == 200 else None
        completion = int(rng.lognormvariate(4.5, 1)) if status == 200 else None
        out.append({
            "id": f"{seed}-{n}",
            "timestamp": (start + timedelta(milliseconds=n * 3)).isoformat(),
            "endpoint": "/v1/chat/completions",
            "model": MODELS[rng.randrange(len(MODELS))],
            "stream": rng.random() < 0.4,
            "status": status,
            "latency_ms": round(rng.lognormvariate(6.2, 0.8), 1),
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion},
            "request_id": f"o{n:x}-{seed}",
            "headers": {"x-ratelimit-limit": "100", "x-ratelimit-remaining": str(rng.randrange(100))},
            "error": error,
        })
    return out


def entries_from(rows: list[dict], app_keys: Sequence, client_ids: bool) -> list:
    """The LogEntry objects the proxy (no client id) or the ingest API would build for the same requests."""
    from together_dash.traffic.ingest import RECORD, to_entry

    now = datetime.now(UTC)
    entries = []
    for n, row in enumerate(rows):
        entry = to_entry(RECORD.validate_python(row), app_keys[n % len(app_keys)], now)
        if not client_ids:
            entry.source, entry.client_id = "proxy", None
        entries.append(entry)
    return entries


def create_keys(count: int) -> tuple[list, str]:
    """Upstream keys with one app key each; returns the app keys and the first one's secret."""
    from together_dash.keys.models import AppKey, TogetherKey

    app_keys, secret = [], ""
    for n in range(count):
        upstream = TogetherKey.create(f"bench-{n}", f"tgp_bench_{n:02d}" + "x" * 40)
        app_key = AppKey(name=f"bench-{n}", upstream_key=upstream)
        secret = secret or app_key.issue()
        if n:
            app_key.issue()
        app_key.save()
        app_keys.append(app_key)
    return app_keys, secret


# ---- the measurements --------------------------------------------------------------------------------

@dataclass
class Rate:
    """Rows per second, and the CPU each row cost in this process and in its PostgreSQL backend."""

    rows_per_s: float = 0.0
    client_cpu_us: float = 0.0
    server_cpu_us: float = 0.0

    def best(self, other: Rate) -> Rate:
        return other if other.rows_per_s > self.rows_per_s else self


def backend_cpu_seconds(pid: int | None) -> float:
    """User + system CPU of a local PostgreSQL backend, from /proc (0 when it cannot be read)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(label: str, rows: int, run: Callable[[], None], backend_pid: int | None) -> Rate:
    # CPU per row does not depend on what else the machine runs; rows/s does (a shared 2-core box).
    server, client, started = backend_cpu_seconds(backend_pid), time.process_time(), time.perf_counter()
    run()
    seconds = time.perf_counter() - started
    rate = Rate(rows / seconds, (time.process_time() - client) / rows * 1e6,
                (backend_cpu_seconds(backend_pid) - server) / rows * 1e6)
    print(f"  {label:<16} {rows:>9,} rows in {seconds:6.2f} s = {rate.rows_per_s:>9,.0f} rows/s; "
          f"CPU per row: {rate.client_cpu_us:5.1f} us here + {rate.server_cpu_us:5.1f} us in PostgreSQL",
          flush=True)
    return rate


def django_backend_pid() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def empty_tables() -> None:
    from django.db import connection

    from together_dash.traffic.models import ErrorGroup, RequestLog, UsageDay, UsageHour, UsageMinute

    tables = ", ".join(m._meta.db_table for m in (RequestLog, ErrorGroup, UsageMinute, UsageHour, UsageDay))
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {tables}")  # noqa: S608 (table names from _meta)


def baseline_copy(url: str, entries: list, batch: int) -> Rate:
    """Plain psycopg binary COPY of the same rows into a table with no index at all."""
    from together_dash.traffic import recording

    rows = [recording._prepare(n, entry).row for n, entry in enumerate(entries)]
    columns = ", ".join(recording.LOG_COLUMNS)
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE bare_copy AS SELECT * FROM traffic_requestlog WITH NO DATA")
        conn.commit()

        def run() -> None:
            for start in range(0, len(rows), batch):
                with conn.cursor().copy(f"COPY bare_copy ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
                    copy.set_types(recording._LOG_COPY_TYPES)
                    for row in rows[start:start + batch]:
                        copy.write_row(row)
                conn.commit()

        rate = timed("baseline COPY", len(rows), run, conn.info.backend_pid)
        conn.execute("DROP TABLE bare_copy")
        conn.commit()
    return rate


def through_record_entries(label: str, entries: list, batch: int) -> Rate:
    from together_dash.traffic.recording import record_entries

    empty_tables()
    batches = [entries[start:start + batch] for start in range(0, len(entries), batch)]
    return timed(label, len(entries), lambda: [record_entries(b) for b in batches], django_backend_pid())


def through_http(
    dashboard: Dashboard, app_key: str, bodies: list[bytes], per_body: int, clients: int
) -> Rate:
    empty_tables()
    queue = list(bodies)
    lock, failures = threading.Lock(), []

    def client() -> None:
        headers = {"Authorization": f"Bearer {app_key}", "Content-Type": "application/json"}
        with httpx.Client(base_url=dashboard.root_url, headers=headers, timeout=120) as http:
            while True:
                with lock:
                    if not queue:
                        return
                    body = queue.pop()
                response = http.post("/api/ingest", content=body)
                if response.status_code != 200 or response.json()["created"] != per_body:
                    failures.append(response.status_code)

    def run() -> None:
        threads = [threading.Thread(target=client) for _ in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    rate = timed(f"http x{dashboard.workers}", len(bodies) * per_body, run, None)
    if failures:
        raise SystemExit(f"{len(failures)} ingest requests failed: {failures[:5]}")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000, help="rows per measurement (default 50,000)")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per path, best kept (default 3)")
    args = parser.parse_args()
    admin_url, bench_url = database_urls()
    recreate_database(admin_url)
    try:
        results = measure(bench_url, args.rows, args.repeats)
    finally:
        drop_database(admin_url)
    write_results("ingest_rate", results)
    best = max(results["record_entries_ingest_rows_per_s"], results["record_entries_ingest_5000_rows_per_s"])
    verdict = "meets" if best >= TARGET_ROWS_PER_SECOND else "misses"
    print(f"record_entries {verdict} the target of {TARGET_ROWS_PER_SECOND:,} rows/s ({best:,} rows/s)")


def measure(bench_url: str, count: int, repeats: int) -> dict:
    import json as json_module

    os.environ["DATABASE_URL"] = bench_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "together_dash.settings")
    os.environ.setdefault("DEBUG", "false")
    os.environ.setdefault("SECURE_SSL_REDIRECT", "false")
    os.environ.setdefault("SECRET_KEY", "bench-" + Fernet.generate_key().decode())
    os.environ.setdefault("FIELD_ENCRYPTION_KEYS", Fernet.generate_key().decode())
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    app_keys, secret = create_keys(4)
    start = datetime.now(UTC) - timedelta(minutes=30)
    rows = records(count, seed=1, start=start)
    load = os.getloadavg()[0]
    print(f"PostgreSQL ingest rate, {count:,} rows per measurement, best of {repeats} "
          f"({os.cpu_count()} CPUs, load average {load:.1f})")
    proxy_entries = entries_from(rows, app_keys, client_ids=False)
    ingest_entries = entries_from(rows, app_keys, client_ids=True)
    baseline, proxy, ingest, large = Rate(), Rate(), Rate(), Rate()
    for _ in range(repeats):  # interleaved, so a busy moment on the machine hits every path alike
        baseline = baseline.best(baseline_copy(bench_url, proxy_entries, 1000))
        proxy = proxy.best(through_record_entries("proxy batches", proxy_entries, 500))
        ingest = ingest.best(through_record_entries("ingest batches", ingest_entries, 1000))
        large = large.best(through_record_entries("ingest x5000", ingest_entries, 5000))
    per_body = 1000
    bodies = [json_module.dumps(rows[i:i + per_body]).encode() for i in range(0, count, per_body)]
    from django.db import connections

    connections.close_all()
    # Over HTTP as deployed: one uvicorn process, and one per CPU (uvicorn --workers, or WEB_CONCURRENCY),
    # which is how a machine is run for throughput; each with two clients per process posting batches.
    workers = os.cpu_count() or 1
    http, http_workers = Rate(), Rate()
    for _ in range(repeats):
        with Dashboard(upstream="http://127.0.0.1:9/v1", env={"DATABASE_URL": bench_url}) as dashboard:
            http = http.best(through_http(dashboard, secret, bodies, per_body, clients=2))
        with Dashboard(upstream="http://127.0.0.1:9/v1", env={"DATABASE_URL": bench_url},
                       workers=workers) as dashboard:
            http_workers = http_workers.best(
                through_http(dashboard, secret, bodies, per_body, clients=2 * workers)
            )
    results: dict = {
        "rows": count, "repeats": repeats, "cpus": os.cpu_count(), "load_average_at_start": round(load, 2),
        "target_rows_per_s": TARGET_ROWS_PER_SECOND, "http_workers": workers,
    }
    paths = {"baseline_copy": baseline, "record_entries_proxy": proxy, "record_entries_ingest": ingest,
             "record_entries_ingest_5000": large, "http_ingest": http,
             "http_ingest_workers": http_workers}
    for name, rate in paths.items():
        results[f"{name}_rows_per_s"] = round(rate.rows_per_s)
        results[f"{name}_ratio_to_baseline"] = round(rate.rows_per_s / baseline.rows_per_s, 3)
        results[f"{name}_cpu_us_per_row"] = {"client": round(rate.client_cpu_us, 1),
                                             "postgresql": round(rate.server_cpu_us, 1)}
        print(f"  {name:<26} {results[f'{name}_ratio_to_baseline']:.3f} x baseline COPY")
    return results


if __name__ == "__main__":
    main()
