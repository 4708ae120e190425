"""Dashboard at scale: the overview and every chart endpoint at 10 thousand and at 10 million request logs.

For each size, a scratch PostgreSQL database (together_dash_bench_10k, together_dash_bench_10m) is
created, migrated and loaded by `manage.py generate_request_logs` (binary COPY, then set-based error
groups and rollups), then VACUUM ANALYZEd. A database that already holds the same number of rows with a
fresh enough marker is reused, so reruns are fast; --fresh rebuilds it. Then both ASGI servers run side by
side (uvicorn, DEBUG off, throwaway secrets), a viewer logs in to each through the login form, and every
endpoint is timed for the 24h and 30d ranges: warm-up, then requests alternating between the two sizes,
so that whatever else the machine does hits both alike.

After the load, `manage.py generate_billing_usage --organizations 2` bills every finished hour of the
generated traffic into the report Together would send (the keys split between two organisations), and
stores it as the billing poller does; rerunning it stores nothing new. A credit balance a week old is
entered, so the overview's runway panel reads spend since it.

Timed: the overview "/", every URL named dashboard-chart-* (found in the URLconf), the billing
reconciliation /api/billing/reconciliation (day windows for 30d, hour windows for 24h), and, for
information, /api/requests (first page), /api/usage and /api/billing/runway. Target (DESIGN.md, issue
17): overview, each chart endpoint and the reconciliation p95 <= 150 ms at 10 million logs, and no more
than 2x its p95 at 10 thousand.
Writes bench/results/dashboard_scale.json.

    [BENCH_DATABASE_PREFIX=together_dash_bench] .venv/bin/python bench/dashboard_scale.py [--fresh]
        [--sizes 10000,10000000] [--requests 50] [--only api-billing-reconciliation,overview]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
from cryptography.fernet import Fernet

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, free_port, percentile, wait_until_ready, write_results  # noqa: E402

SERVER_URL = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432")
# Another prefix keeps a branch's scratch databases (and its migrations) apart from the shared ones.
DATABASE_PREFIX = os.environ.get("BENCH_DATABASE_PREFIX", "together_dash_bench")
SIZES = (10_000, 10_000_000)
RANGES = ("24h", "30d")
SPANS = {"24h": timedelta(hours=24), "30d": timedelta(days=30)}
# The reconciliation's windows for each range: hours over a day, UTC days over a month.
GRANULARITIES = {"24h": "hour", "30d": "day"}
RECONCILIATION = "/api/billing/reconciliation"
ORGANIZATIONS = 2
TARGET_P95_MS = 150.0
TARGET_RATIO = 2.0
SEED = 1
VIEWER = "bench-viewer"
# Generated traffic ends when it was loaded; older than this, a "last 24 hours" view would be half empty.
MAX_AGE = timedelta(hours=6)
MARKER_TABLE = "bench_dataset"


def label(size: int) -> str:
    return f"{size // 1_000_000}m" if size >= 1_000_000 and size % 1_000_000 == 0 else f"{size // 1000}k"


@dataclass
class Scratch:
    """One scratch database and the environment every process that uses it runs with."""

    size: int
    env: dict[str, str]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{DATABASE_PREFIX}_{label(self.size)}"

    @property
    def url(self) -> str:
        return f"{SERVER_URL}/{self.name}"


def throwaway_env(var_dir: str) -> dict[str, str]:
    """Production-like settings with secrets made up for this run only."""
    return {
        **os.environ,
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "FIELD_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "false",
        "SESSION_COOKIE_SECURE": "false",
        "CSRF_COOKIE_SECURE": "false",
        "TOGETHER_DASH_VAR_DIR": var_dir,
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
    }


def manage(env: dict[str, str], *args: str, show: bool = False) -> str:
    """Run a management command; with show, its output goes to the console as it comes."""
    command = [sys.executable, "manage.py", *args]
    if show:
        subprocess.run(command, cwd=ROOT, env=env, check=True)
        return ""
    return subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True, text=True).stdout


def admin_sql(sql: str) -> None:
    with psycopg.connect(f"{SERVER_URL}/postgres", autocommit=True) as conn:
        conn.execute(sql)


# ---- the data ----------------------------------------------------------------------------------------


def prepare(scratch: Scratch, fresh: bool) -> None:
    """Create, migrate and load the scratch database, unless it already holds this data set."""
    if fresh:
        admin_sql(f'DROP DATABASE IF EXISTS "{scratch.name}" WITH (FORCE)')
    with psycopg.connect(f"{SERVER_URL}/postgres", autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [scratch.name]).fetchone():
            conn.execute(f'CREATE DATABASE "{scratch.name}"')
    manage(scratch.env, "migrate", "--noinput", "--verbosity", "0", "--skip-checks")
    marker = read_marker(scratch)
    if marker is None:
        load(scratch)
    else:
        print(
            f"[{label(scratch.size)}] reusing {scratch.name}: "
            f"{scratch.size:,} rows loaded {marker['loaded_at']}"
        )
        scratch.info.update(marker, reused=True)
    billing = manage(scratch.env, "generate_billing_usage", "--organizations", str(ORGANIZATIONS))
    print(f"[{label(scratch.size)}] {billing.strip()}", flush=True)
    with psycopg.connect(scratch.url, autocommit=True) as conn:
        conn.execute("ANALYZE billing_billinglineitem, billing_billingday, billing_billingwindow")
    scratch.info.update(database_size(scratch))


def read_marker(scratch: Scratch) -> dict[str, Any] | None:
    """The marker of a finished load of the same size that is recent enough, or None."""
    with psycopg.connect(scratch.url) as conn:
        if not conn.execute("SELECT to_regclass(%s)", [MARKER_TABLE]).fetchone()[0]:
            return None
        row = conn.execute(
            f"SELECT rows, loaded_at, load_seconds, vacuum_seconds FROM {MARKER_TABLE}"  # noqa: S608
        ).fetchone()
        count = conn.execute("SELECT COUNT(*) FROM traffic_requestlog").fetchone()[0]
    if row is None or row[0] != scratch.size or count != scratch.size:
        return None
    if datetime.now(UTC) - row[1] > MAX_AGE:
        print(
            f"[{label(scratch.size)}] {scratch.name} was loaded {row[1]:%Y-%m-%d %H:%M} UTC: "
            "too old, reloading"
        )
        return None
    return {
        "loaded_at": row[1].isoformat(),
        "load_seconds": round(row[2], 1),
        "vacuum_seconds": round(row[3], 1),
        "rows_per_second": round(scratch.size / row[2]),
    }


def load(scratch: Scratch) -> None:
    print(
        f"[{label(scratch.size)}] loading {scratch.size:,} request logs into {scratch.name} ...", flush=True
    )
    started = time.perf_counter()
    manage(
        scratch.env,
        "generate_request_logs",
        "--count",
        str(scratch.size),
        "--seed",
        str(SEED),
        "--truncate",
        "--skip-checks",
        show=True,
    )
    load_seconds = time.perf_counter() - started
    started = time.perf_counter()
    with psycopg.connect(scratch.url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")
    vacuum_seconds = time.perf_counter() - started
    with psycopg.connect(scratch.url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {MARKER_TABLE}")
        conn.execute(
            f"CREATE TABLE {MARKER_TABLE} (rows bigint, loaded_at timestamptz, load_seconds float8, "
            "vacuum_seconds float8)"
        )
        conn.execute(
            f"INSERT INTO {MARKER_TABLE} VALUES (%s, now(), %s, %s)",  # noqa: S608
            [scratch.size, load_seconds, vacuum_seconds],
        )
    scratch.info.update(
        reused=False,
        loaded_at=datetime.now(UTC).isoformat(),
        load_seconds=round(load_seconds, 1),
        vacuum_seconds=round(vacuum_seconds, 1),
        rows_per_second=round(scratch.size / load_seconds),
    )
    print(
        f"[{label(scratch.size)}] loaded in {load_seconds:.1f} s ({scratch.size / load_seconds:,.0f} rows/s "
        f"end to end), VACUUM ANALYZE {vacuum_seconds:.1f} s",
        flush=True,
    )


def database_size(scratch: Scratch) -> dict[str, Any]:
    with psycopg.connect(scratch.url) as conn:
        database = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
        logs = conn.execute("SELECT pg_total_relation_size('traffic_requestlog')").fetchone()[0]
        billing = conn.execute("SELECT COUNT(*) FROM billing_billinglineitem").fetchone()[0]
        rollups = conn.execute(
            "SELECT pg_total_relation_size('traffic_usageminute')"
            " + pg_total_relation_size('traffic_usagehour')"
            " + pg_total_relation_size('traffic_usageday')"
        ).fetchone()[0]
    return {
        "database_mb": round(database / 2**20),
        "request_log_mb": round(logs / 2**20),
        "rollups_mb": round(rollups / 2**20),
        "billing_line_items": billing,
    }


_VIEWER_SCRIPT = """
import os
from django.contrib.auth.models import Group, User
from together_dash.core.roles import VIEWER_GROUP
user, _ = User.objects.get_or_create(username=os.environ["BENCH_VIEWER"])
user.set_password(os.environ["BENCH_PASSWORD"])
user.save()
user.groups.add(Group.objects.get_or_create(name=VIEWER_GROUP)[0])
"""


def create_viewer(scratch: Scratch, password: str) -> None:
    env = {**scratch.env, "BENCH_VIEWER": VIEWER, "BENCH_PASSWORD": password}
    manage(env, "shell", "--command", _VIEWER_SCRIPT)


def enter_balance(scratch: Scratch) -> None:
    """A credit balance a week old, so the overview's runway panel reads spend since it, not the burn only."""
    as_of = (datetime.now(UTC) - timedelta(days=7)).isoformat(timespec="minutes")
    manage(scratch.env, "set_credit_balance", "5000", "--as-of", as_of)


# ---- the servers -------------------------------------------------------------------------------------

_DISCOVER_SCRIPT = """
import json
from django.urls import NoReverseMatch, get_resolver, reverse
found = {}
for name in get_resolver().reverse_dict:
    if isinstance(name, str) and name.startswith("dashboard-chart-"):
        try:
            found[name] = reverse(name)
        except NoReverseMatch:
            pass  # a chart that needs path arguments is not a range chart
print(json.dumps(dict(sorted(found.items()))))
"""


def chart_endpoints(env: dict[str, str]) -> dict[str, str]:
    """Every URL named dashboard-chart-*, found by asking the project's URLconf."""
    return json.loads(manage(env, "shell", "--command", _DISCOVER_SCRIPT).strip().splitlines()[-1])


class Server:
    """uvicorn serving the ASGI app on one scratch database, and a client logged in as the viewer."""

    def __init__(self, scratch: Scratch, password: str) -> None:
        self.scratch = scratch
        port = free_port()
        self.root = f"http://127.0.0.1:{port}"
        app = ["-m", "uvicorn", "together_dash.asgi:application", "--host", "127.0.0.1", "--port", str(port)]
        quiet = ["--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning"]
        self.process = subprocess.Popen([sys.executable, *app, *quiet], cwd=ROOT, env=scratch.env)
        wait_until_ready(f"{self.root}/healthz", self.process)
        self.client = httpx.Client(base_url=self.root, timeout=60.0)
        self._log_in(password)

    def _log_in(self, password: str) -> None:
        page = self.client.get("/accounts/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        if token is None:
            raise SystemExit(f"no login form at {self.root}/accounts/login/ ({page.status_code})")
        form = {"username": VIEWER, "password": password, "csrfmiddlewaretoken": token.group(1), "next": "/"}
        answer = self.client.post(
            "/accounts/login/", data=form, headers={"Referer": f"{self.root}/accounts/login/"}
        )
        if answer.status_code != 302:
            raise SystemExit(f"login failed on {self.root}: HTTP {answer.status_code}")

    def get(self, path: str, params: dict[str, str]) -> float:
        """Seconds for one GET; a status other than 200 stops the benchmark."""
        started = time.perf_counter()
        response = self.client.get(path, params=params)
        elapsed = time.perf_counter() - started
        if response.status_code != 200:
            raise SystemExit(f"GET {path} {params} on {self.scratch.name}: HTTP {response.status_code}")
        return elapsed

    def stop(self) -> None:
        self.client.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()


# ---- timing ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    name: str
    path: str
    held_to_target: bool  # the overview and charts are; the JSON API is timed for information

    def params(self, range_name: str, now: datetime) -> dict[str, str]:
        if self.path.startswith("/api/"):
            span = {"start": (now - SPANS[range_name]).isoformat(), "end": now.isoformat()}
            if self.path == RECONCILIATION:
                span["granularity"] = GRANULARITIES[range_name]
            return span
        return {"range": range_name}


def targets(charts: dict[str, str]) -> list[Target]:
    found = [Target("overview", "/", True)]
    found += [Target(name.removeprefix("dashboard-"), path, True) for name, path in charts.items()]
    found.append(Target("api-billing-reconciliation", RECONCILIATION, True))
    return found + [
        Target("api-requests", "/api/requests", False),
        Target("api-usage", "/api/usage", False),
        Target("api-billing-runway", "/api/billing/runway", False),  # takes no range: the same read each time
    ]


def time_target(
    servers: list[Server], target: Target, range_name: str, warmup: int, count: int
) -> list[list[float]]:
    """Warm up each server, then alternate between them (the order flips every round)."""
    params = target.params(range_name, datetime.now(UTC))
    for server in servers:
        for _ in range(warmup):
            server.get(target.path, params)
    times: list[list[float]] = [[] for _ in servers]
    for round_number in range(count):
        order = list(enumerate(servers))
        for index, server in order if round_number % 2 == 0 else reversed(order):
            times[index].append(server.get(target.path, params))
    return times


def measure(servers: list[Server], found: list[Target], warmup: int, count: int) -> list[dict[str, Any]]:
    rows = []
    for target in found:
        for range_name in RANGES:
            times = time_target(servers, target, range_name, warmup, count)
            row = row_for(target, range_name, servers, times)
            print_row(row, [server.scratch.size for server in servers])
            rows.append(row)
    return rows


def row_for(
    target: Target, range_name: str, servers: list[Server], times: list[list[float]]
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "endpoint": target.name,
        "path": target.path,
        "range": range_name,
        "held_to_target": target.held_to_target,
    }
    for server, seconds in zip(servers, times, strict=True):
        row[label(server.scratch.size)] = {
            "p50_ms": round(percentile(seconds, 0.5) * 1000, 2),
            "p95_ms": round(percentile(seconds, 0.95) * 1000, 2),
            "n": len(seconds),
        }
    small, large = (row[label(server.scratch.size)]["p95_ms"] for server in (servers[0], servers[-1]))
    row["ratio_p95"] = round(large / small, 2) if small else None
    row["meets_target"] = large <= TARGET_P95_MS and (row["ratio_p95"] or 0) <= TARGET_RATIO
    return row


def print_header(sizes: list[int]) -> None:
    small, large = label(sizes[0]), label(sizes[-1])
    print(
        f"\n{'endpoint':<22} {'range':<5} {'p50 ' + small:>10} {'p95 ' + small:>10} {'p50 ' + large:>10} "
        f"{'p95 ' + large:>10} {'ratio':>7}  target (p95 <= {TARGET_P95_MS:.0f} ms, <= {TARGET_RATIO:.0f}x)"
    )


def print_row(row: dict[str, Any], sizes: list[int]) -> None:
    small, large = row[label(sizes[0])], row[label(sizes[-1])]
    verdict = ("ok" if row["meets_target"] else "MISSED") if row["held_to_target"] else "(info)"
    ratio = f"{row['ratio_p95']:.2f}x" if row["ratio_p95"] is not None else "-"
    print(
        f"{row['endpoint']:<22} {row['range']:<5} {small['p50_ms']:>8.1f}ms {small['p95_ms']:>8.1f}ms "
        f"{large['p50_ms']:>8.1f}ms {large['p95_ms']:>8.1f}ms {ratio:>7}  {verdict}",
        flush=True,
    )


def figures(rows: list[dict[str, Any]], sizes: list[int]) -> list[dict[str, Any]]:
    """The headline table for BENCHMARKS.md: p95 at the large size against its p95 at the small one."""
    small, large = label(sizes[0]), label(sizes[-1])
    return [
        {
            "figure": f"{row['endpoint']} ({row['range']}) p95 at {large}, ms",
            "value": row[large]["p95_ms"],
            "baseline": row[small]["p95_ms"],
            "baseline_label": f"p95 at {small}",
            "ratio": row["ratio_p95"],
            "target": f"<= {TARGET_P95_MS:.0f} ms and <= {TARGET_RATIO:.0f}x"
            if row["held_to_target"]
            else "(info)",
            "meets_target": row["meets_target"] if row["held_to_target"] else None,
        }
        for row in rows
    ]


# ---- main --------------------------------------------------------------------------------------------


def run(
    sizes: list[int], fresh: bool, warmup: int, count: int, only: set[str] | None = None
) -> dict[str, Any]:
    password = secrets.token_urlsafe(16)
    with tempfile.TemporaryDirectory(prefix="together-dash-scale-") as var_dir, ExitStack() as stack:
        env = throwaway_env(var_dir)
        manage(env, "collectstatic", "--noinput", "--verbosity", "0")  # DEBUG off serves the manifest
        scratches = [
            Scratch(size, {**env, "DATABASE_URL": f"{SERVER_URL}/{DATABASE_PREFIX}_{label(size)}"})
            for size in sizes
        ]
        for scratch in scratches:
            prepare(scratch, fresh)
            create_viewer(scratch, password)
            enter_balance(scratch)
        found = [t for t in targets(chart_endpoints(scratches[0].env)) if not only or t.name in only]
        if not found:
            raise SystemExit(f"--only names no endpoint: {sorted(only or ())}")
        servers = []
        for scratch in scratches:
            server = Server(scratch, password)
            stack.callback(server.stop)
            servers.append(server)
        print_header(sizes)
        rows = measure(servers, found, warmup, count)
    held = [row for row in rows if row["held_to_target"]]
    return {
        "sizes": {label(s.size): {"rows": s.size, "database": s.name, **s.info} for s in scratches},
        "target": {
            "p95_ms": TARGET_P95_MS,
            "ratio": TARGET_RATIO,
            "applies_to": "overview, dashboard-chart-* and /api/billing/reconciliation",
        },
        "requests_per_endpoint": count,
        "warmup": warmup,
        "endpoints": rows,
        "figures": figures(rows, sizes),
        "meets_target": all(row["meets_target"] for row in held),
        "worst_p95_ms": max((row[label(sizes[-1])]["p95_ms"] for row in held), default=None),
        "worst_ratio": max((row["ratio_p95"] or 0 for row in held), default=None),
        "cpus": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        default=",".join(str(size) for size in SIZES),
        help="comma-separated row counts, smallest first (default 10000,10000000)",
    )
    parser.add_argument("--fresh", action="store_true", help="rebuild the scratch databases")
    parser.add_argument(
        "--requests", type=int, default=50, help="timed requests per endpoint, range and size"
    )
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument(
        "--only", default="", help="comma-separated endpoint names to time (default: all), e.g. overview"
    )
    args = parser.parse_args()
    sizes = sorted(int(size) for size in args.sizes.split(","))
    only = {name.strip() for name in args.only.split(",") if name.strip()} or None
    results = run(sizes, args.fresh, args.warmup, args.requests, only)
    # A partial run keeps the full run's results (make bench's BENCHMARKS.md reads those).
    path = write_results("dashboard_scale_partial" if only else "dashboard_scale", results)
    for name, size in results["sizes"].items():
        print(
            f"{name}: database {size['database_mb']:,} MB (request logs {size['request_log_mb']:,} MB), "
            f"load {size.get('load_seconds')} s, VACUUM ANALYZE {size.get('vacuum_seconds')} s"
        )
    verdict = "met" if results["meets_target"] else "MISSED"
    print(
        f"Target {verdict}: worst p95 {results['worst_p95_ms']} ms, worst ratio {results['worst_ratio']}x. "
        f"Wrote {path.relative_to(ROOT)}"
    )


if __name__ == "__main__":
    main()
