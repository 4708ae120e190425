"""Sustained load: the proxy at its highest sustainable rate for 5 minutes, beside viewers and ingest.

Runs production's parts on PostgreSQL and Redis: the simulator as upstream, the dashboard and proxy
under uvicorn (as in the Procfile), a Celery worker and beat (the pollers run against the simulator and
any alert email is sent by the worker), on a scratch database (together_dash_soak, dropped and recreated
on every run, dropped at the end) with the cache and broker on Redis databases 14 and 15 (flushed).
One load generator (asyncio on uvloop) then runs, all the time:
  viewers   --viewers users with the viewer role, each its own logged-in session, every
            --viewer-interval seconds fetching the overview and its chart endpoints at once, as the
            page's script does
  ingest    POST /api/ingest (app key) at --ingest-rate rows/s in 1,000-row batches, on schedule,
            at most 4 posts in flight (a log shipper's few senders; later batches wait their turn)
and, phase by phase, open-loop proxy load (non-stream chat completions sent on schedule, whether or not
earlier ones have come back; latency counts from the scheduled time, so a slow server cannot hide it):
  quiet     20 s without proxy load (the viewers' baseline)
  ramp      --ramp-step seconds at each of --ramp-rates req/s, until a step fails twice running
            (a failed step is run once more: one busy moment of a shared machine is not the limit).
            A step is sustainable when every request got a 200 within 10 s and its p99 is
            <= --p99-bound ms (250): past capacity an open-loop queue grows without end and crosses
            that within seconds, while the scheduling noise of a busy shared machine does not (calls
            straight to the simulator reach a p99 over 100 ms on a loaded 2-core box); and when the
            rest of the machine's work still gets done: viewer p95 <= --viewer-bound ms (300, twice
            the dashboard's target) without errors, and ingest within 10% of its rate.
  trial     60 s at the highest sustainable step, by the same rule: a 20 s step can pass at a rate the
            machine cannot keep up for minutes. A failed trial steps down one ramp rate and tries again.
            The held rate is the first that passes its trial (the lowest step when none does).
  settle    10 s without proxy load, so a failed step's backlog drains
  direct    20 s at the held rate straight to the simulator: the baseline for proxy latency
  hold      --duration seconds at the held rate through the proxy
Per 10 s window: proxy requests sent/ok/errors and p50/p95/p99, viewer request p95 and errors, ingest
rows stored per second, rejections and failed posts, request logs the proxy dropped, connections to the
soak database, and the RSS of the server, worker and beat processes. A request not answered within 10 s
is an error, and so is one not sent because 1,000 were already waiting.
Prints the windows and a summary; writes bench/results/soak.json (figures and the time series) and
bench/results/soak.png.

    .venv/bin/python bench/soak.py [--duration 300] [--viewers 20] [--ingest-rate 5000] [--rate N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import secrets
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis
from cryptography.fernet import Fernet

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    PYTHON,
    RESULTS_DIR,
    ROOT,
    Dashboard,
    RawClient,
    Simulator,
    percentile,
    rss_bytes,
    run_loop,
    write_results,
)
from common import _Process as Process  # noqa: E402
from dashboard_scale import chart_endpoints  # noqa: E402
from ingest_rate import records  # noqa: E402

POSTGRES_URL = os.environ.get("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379")
DATABASE = "together_dash_soak"
CACHE_DB, BROKER_DB = 14, 15
CHAT = {
    "model": "meta-llama/Meta-Llama-3.1-8B-Instruct-Turbo",
    "messages": [{"role": "user", "content": "hi"}],
}
WINDOW_S = 10.0
TIMEOUT_S = 10.0  # = WINDOW_S: a window's requests have all ended when the next window closes
MAX_IN_FLIGHT = 1000  # proxy requests waiting at once; more are counted as errors, not sent
NOT_SENT = "not sent: too many waiting"
WARM_UP = 200  # requests on each path before anything is measured
MAX_IDLE_S = 4.0  # uvicorn closes a keep-alive connection idle for 5 s; clients drop theirs first
INGEST_BATCH = 1000
INGEST_CONNECTIONS = 4  # posts in flight at most, like a log shipper's few senders; the rest wait
QUIET_S, SETTLE_S, DIRECT_S = 20.0, 10.0, 20.0
RAMP_RATES = "50,75,110,170,250,380,570,850,1300"
VIEWER_RANGE = "24h"  # the overview's default
TARGET_ADDED_P99_MS = 25.0
TARGET_VIEWER_P95_MS = 150.0
TRIAL_S = 60.0
ATTEMPT_LABELS = {2: " (again)", "trial": " (trial)"}
TARGET_RSS_RATIO = 1.10


# ---- one 10-second window ----------------------------------------------------------------------------


@dataclass
class Window:
    """What happened to the requests sent in one window of one phase (answers may land later)."""

    phase: str
    target: str  # "proxy", "direct" or "" (no proxy load)
    rate: float
    start: float  # seconds since the load began
    seconds: float = 0.0
    sent: int = 0
    ok: int = 0
    errors: Counter = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)
    viewer_times: list[float] = field(default_factory=list)
    viewer_errors: Counter = field(default_factory=Counter)
    ingest_rows: int = 0
    ingest_stored: int = 0
    ingest_rejected: int = 0
    ingest_failed: Counter = field(default_factory=Counter)
    rss_mb: dict[str, float] = field(default_factory=dict)
    logs_dropped: int = 0
    log_buffer: int = 0
    db_connections: int | None = None
    client_cpu: float = 0.0
    opened: tuple[float, float] = field(default_factory=lambda: (time.perf_counter(), time.process_time()))

    def summary(self) -> dict[str, Any]:
        """Its numbers (or those of several merged), as the table, the JSON and the plot use them."""
        seconds = self.seconds or WINDOW_S
        scheduled = self.sent / self.rate if self.rate else seconds  # rates over the schedule's span
        errors, viewer_errors = sum(self.errors.values()), sum(self.viewer_errors.values())
        return {
            "seconds": round(seconds, 2),
            "proxy_sent": self.sent,
            "proxy_ok": self.ok,
            "proxy_errors": errors,
            "proxy_error_kinds": dict(self.errors),
            "proxy_error_rate": errors / self.sent if self.sent else 0.0,
            "proxy_ok_per_s": round(self.ok / scheduled, 1),
            "proxy_p50_ms": ms(self.latencies, 0.50),
            "proxy_p95_ms": ms(self.latencies, 0.95),
            "proxy_p99_ms": ms(self.latencies, 0.99),
            "proxy_max_ms": ms(self.latencies, 1.0),
            "send_lag_p99_ms": ms(self.lags, 0.99),
            "viewer_requests": len(self.viewer_times) + viewer_errors,
            "viewer_errors": viewer_errors,
            "viewer_error_kinds": dict(self.viewer_errors),
            "viewer_p50_ms": ms(self.viewer_times, 0.50),
            "viewer_p95_ms": ms(self.viewer_times, 0.95),
            "ingest_rows_sent": self.ingest_rows,
            "ingest_rows_stored": self.ingest_stored,
            "ingest_rows_per_s": round(self.ingest_stored / seconds),
            "ingest_rejected": self.ingest_rejected,
            "ingest_failed_posts": sum(self.ingest_failed.values()),
            "ingest_error_kinds": dict(self.ingest_failed),
            "logs_dropped": self.logs_dropped,
        }

    def row(self) -> dict[str, Any]:
        """One point of the time series."""
        return {
            "phase": self.phase,
            "target": self.target,
            "rate": self.rate,
            "t": round(self.start, 1),
            **self.summary(),
            "rss_mb": self.rss_mb,
            "log_buffer": self.log_buffer,
            "db_connections": self.db_connections,
            "load_generator_cpu_pct": round(self.client_cpu * 100),
        }


def ms(seconds: list[float], fraction: float) -> float | None:
    return round(percentile(seconds, fraction) * 1000, 2) if seconds else None


def merged(windows: list[Window]) -> Window:
    """One window holding everything of several (a ramp step, a phase)."""
    whole = Window(windows[0].phase, windows[0].target, windows[0].rate, windows[0].start)
    for window in windows:
        whole.seconds += window.seconds
        whole.sent += window.sent
        whole.ok += window.ok
        whole.errors += window.errors
        whole.latencies += window.latencies
        whole.lags += window.lags
        whole.viewer_times += window.viewer_times
        whole.viewer_errors += window.viewer_errors
        whole.ingest_rows += window.ingest_rows
        whole.ingest_stored += window.ingest_stored
        whole.ingest_rejected += window.ingest_rejected
        whole.ingest_failed += window.ingest_failed
        whole.logs_dropped += window.logs_dropped
    return whole


HEADER = (
    f"{'t s':>5} {'phase':<10}{'rate':>6}{'sent':>7}{'ok':>7}{'err':>5}{'p50':>8}{'p95':>8}{'p99':>8}"
    f"{'view p95':>10}{'v.err':>6}{'rows/s':>8}{'rej':>5}{'i.err':>6}{'drop':>6}"
    f"{'srv MB':>8}{'wrk MB':>8}{'db':>5}{'gen %':>6}"
)


def print_row(window: Window) -> None:
    row, rss = window.row(), window.rss_mb

    def num(value: float | None, digits: int = 1) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    print(
        f"{row['t']:>5.0f} {row['phase']:<10}{row['rate']:>6.0f}{row['proxy_sent']:>7}{row['proxy_ok']:>7}"
        f"{row['proxy_errors']:>5}{num(row['proxy_p50_ms']):>8}{num(row['proxy_p95_ms']):>8}"
        f"{num(row['proxy_p99_ms']):>8}{num(row['viewer_p95_ms']):>10}{row['viewer_errors']:>6}"
        f"{row['ingest_rows_per_s']:>8}{row['ingest_rejected']:>5}{row['ingest_failed_posts']:>6}"
        f"{row['logs_dropped']:>6}{rss.get('server', 0):>8.0f}{rss.get('worker', 0):>8.0f}"
        f"{num(row['db_connections'], 0):>5}{row['load_generator_cpu_pct']:>6}",
        flush=True,
    )


# ---- the processes -----------------------------------------------------------------------------------


class Celery(Process):
    """A Celery worker or beat as in the Procfile, sharing the dashboard's settings."""

    def __init__(self, env: dict[str, str], role: str, *args: str) -> None:
        self.log = Path(env["TOGETHER_DASH_VAR_DIR"]) / f"celery-{role}.log"
        command = [PYTHON, "-m", "celery", "-A", "together_dash", role, *args, "--loglevel=WARNING"]
        with self.log.open("ab") as log:  # the banner and start-up failures, then the log lines
            self.process = subprocess.Popen(
                [*command, f"--logfile={self.log}"], cwd=ROOT, env=env, stdout=log, stderr=log
            )

    def logged_errors(self) -> dict[str, Any]:
        """ERROR and CRITICAL lines in its log (the pollers' and alerts' failures), with the first few."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        lines = re.findall(r"^\[[^]]*: (?:ERROR|CRITICAL)/.*$", text, re.MULTILINE)
        return {"count": len(lines), "first": [line[:300] for line in lines[:3]]}


def admin_sql(sql: str) -> None:
    with psycopg.connect(f"{POSTGRES_URL}/postgres", autocommit=True) as conn:
        conn.execute(sql)


def flush_redis() -> None:
    for db in (CACHE_DB, BROKER_DB):
        redis.Redis.from_url(f"{REDIS_URL}/{db}").flushdb()


def production_env() -> dict[str, str]:
    """PostgreSQL, Redis cache and broker; TLS-only cookies off, as the load comes over plain HTTP."""
    return {
        "DATABASE_URL": f"{POSTGRES_URL}/{DATABASE}",
        "CACHE_URL": f"{REDIS_URL}/{CACHE_DB}",
        "CELERY_BROKER_URL": f"{REDIS_URL}/{BROKER_DB}",
        "SECURE_SSL_REDIRECT": "false",
        "SESSION_COOKIE_SECURE": "false",
        "CSRF_COOKIE_SECURE": "false",
    }


def collect_static(env: dict[str, str]) -> None:
    """With DEBUG off pages name their static files through the manifest, which collectstatic writes."""
    throwaway = {
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "FIELD_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
    }
    command = [PYTHON, "manage.py", "collectstatic", "--noinput", "--verbosity", "0"]
    subprocess.run(command, cwd=ROOT, env={**os.environ, **env, **throwaway}, check=True)


_VIEWERS_SCRIPT = """
import os
from django.contrib.auth.models import Group, User
from together_dash.core.roles import VIEWER_GROUP
group = Group.objects.get(name=VIEWER_GROUP)
for n in range(int(os.environ["SOAK_VIEWERS"])):
    user = User.objects.create_user(f"soak-viewer-{n}", password=os.environ["SOAK_PASSWORD"])
    user.groups.add(group)
"""


def create_viewers(dash: Dashboard, count: int, password: str) -> list[str]:
    env = {**dash.env, "SOAK_VIEWERS": str(count), "SOAK_PASSWORD": password}
    command = [PYTHON, "manage.py", "shell", "--command", _VIEWERS_SCRIPT]
    subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True)
    return [f"soak-viewer-{n}" for n in range(count)]


def ingest_template() -> bytes:
    """1,000 records of ingest_rate's mix, stamped on arrival, with '@@' where each batch puts its id."""
    batch = records(INGEST_BATCH, seed=7, start=datetime.now(UTC))
    for n, record in enumerate(batch):
        del record["timestamp"]
        record["id"] = f"@@-{n}"
    return json.dumps(batch).encode()


# ---- the load ----------------------------------------------------------------------------------------


class Pool:
    """Keep-alive connections to one server: a request takes the latest idle one or opens its own."""

    def __init__(self, base_url: str, key: str) -> None:
        self.base_url, self.key = base_url, key
        self.idle: list[tuple[float, RawClient]] = []  # (idle since, connection), the oldest first
        self.raw = RawClient(base_url, key).encode("POST", "/chat/completions", CHAT)
        self.in_flight = 0

    async def take(self) -> RawClient:
        """The most recently used connection, unless the server may have closed it for idleness."""
        if self.idle and time.perf_counter() - self.idle[-1][0] < MAX_IDLE_S:
            return self.idle.pop()[1]
        await self.close()  # all older still: a real client library would not reuse them either
        return RawClient(self.base_url, self.key)

    async def send(self) -> int:
        client = await self.take()
        self.in_flight += 1
        try:
            timing = await asyncio.wait_for(client.send(self.raw), TIMEOUT_S)
        except BaseException:
            await client.close()
            raise
        finally:
            self.in_flight -= 1
        self.idle.append((time.perf_counter(), client))
        return timing.status

    async def close(self) -> None:
        for _, client in self.idle:
            await client.close()
        self.idle.clear()


class Load:
    """The load generator: viewers and ingest all along, proxy load phase by phase, in 10 s windows."""

    def __init__(
        self, dash: Dashboard, keys: dict[str, str], processes: dict[str, Process], args: argparse.Namespace
    ) -> None:
        self.dash, self.processes, self.args = dash, processes, args
        self.ingest_key = keys["ingest"]
        self.targets = {"proxy": (dash.base_url, keys["proxy"]), "direct": (keys["simulator"], "bench")}
        self.began = time.perf_counter()
        self.window = Window("setup", "", 0, 0.0)
        self.windows: list[Window] = []
        self.printed = 0
        self.stopping = asyncio.Event()
        self.dropped_mark = 0
        self.http = self.client()

    def client(self, headers: dict[str, str] | None = None, connections: int = 100) -> httpx.AsyncClient:
        """An HTTP client that never reuses a connection the server may be closing for idleness."""
        limits = httpx.Limits(max_connections=connections, keepalive_expiry=MAX_IDLE_S)
        return httpx.AsyncClient(
            base_url=self.dash.root_url, timeout=TIMEOUT_S, limits=limits, headers=headers
        )

    # -- windows and phases

    def open_window(self, phase: str, target: str, rate: float) -> None:
        self.window = Window(phase, target, rate, time.perf_counter() - self.began)

    async def close_window(self, window: Window) -> None:
        """Note how long it lasted and sample the servers' memory and log buffer."""
        window.seconds = time.perf_counter() - window.opened[0]
        window.client_cpu = (time.process_time() - window.opened[1]) / window.seconds
        window.rss_mb = self.rss_mb()
        dropped, window.log_buffer = await self.proxy_metrics()
        window.db_connections = await database_connections()
        window.logs_dropped, self.dropped_mark = dropped - self.dropped_mark, dropped
        self.windows.append(window)
        for earlier in self.windows[self.printed : -1]:  # the one before is complete now (TIMEOUT_S)
            print_row(earlier)
        self.printed = max(self.printed, len(self.windows) - 1)

    def print_pending(self) -> None:
        for window in self.windows[self.printed :]:
            print_row(window)
        self.printed = len(self.windows)

    async def phase(self, name: str, seconds: float, rate: float = 0, target: str = "") -> list[Window]:
        """Run one phase: proxy load at `rate` to `target` (none when 0), windows of WINDOW_S."""
        first = len(self.windows)
        end = time.perf_counter() + seconds
        self.open_window(name, target, rate)
        sender = asyncio.create_task(self.offer(target, rate, seconds)) if rate else None
        while True:
            await asyncio.sleep(max(0.0, min(WINDOW_S, end - time.perf_counter())))
            closing, last = self.window, end - time.perf_counter() < 0.5
            if not last:
                self.open_window(name, target, rate)
            await self.close_window(closing)
            if last:
                break
        if sender is not None:
            await sender
        self.print_pending()
        return self.windows[first:]

    # -- proxy load, open loop

    async def offer(self, target: str, rate: float, seconds: float) -> None:
        """Send on schedule: request n leaves at n / rate, whatever happened to the earlier ones."""
        pool = Pool(*self.targets[target])
        pending: set[asyncio.Task] = set()
        start, n = time.perf_counter(), 0
        while (due := start + n / rate) < start + seconds:
            if (wait := due - time.perf_counter()) > 0:
                await asyncio.sleep(wait)
            window = self.window
            window.sent += 1
            window.lags.append(time.perf_counter() - due)
            if pool.in_flight >= MAX_IN_FLIGHT:
                window.errors[NOT_SENT] += 1
            else:
                task = asyncio.create_task(self.one(pool, due, window))
                pending.add(task)
                task.add_done_callback(pending.discard)
            n += 1
        if pending:
            await asyncio.wait(pending)
        await pool.close()

    async def one(self, pool: Pool, due: float, window: Window) -> None:
        try:
            status = await pool.send()
        except TimeoutError:
            window.errors["timeout"] += 1
            return
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            window.errors[type(exc).__name__] += 1
            return
        if status != 200:
            window.errors[f"HTTP {status}"] += 1
            return
        window.ok += 1
        window.latencies.append(time.perf_counter() - due)

    # -- viewers

    async def log_in(self, username: str, password: str) -> httpx.AsyncClient:
        client = self.client()
        page = await client.get("/accounts/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        if token is None:
            raise SystemExit(f"no login form at /accounts/login/ (HTTP {page.status_code})")
        form = {
            "username": username,
            "password": password,
            "csrfmiddlewaretoken": token.group(1),
            "next": "/",
        }
        answer = await client.post(
            "/accounts/login/", data=form, headers={"Referer": f"{self.dash.root_url}/accounts/login/"}
        )
        if answer.status_code != 302:
            raise SystemExit(f"viewer {username} could not log in: HTTP {answer.status_code}")
        return client

    async def viewer(self, client: httpx.AsyncClient, paths: list[str], offset: float) -> None:
        """Refresh the overview and its charts every viewer_interval seconds, as the page's script does."""
        interval = self.args.viewer_interval
        due = time.perf_counter() + offset
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), offset)
        while not self.stopping.is_set():
            window = self.window
            await asyncio.gather(*(self.view(client, path, window) for path in paths))
            due += interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), max(0.0, due - time.perf_counter()))
        await client.aclose()

    async def view(self, client: httpx.AsyncClient, path: str, window: Window) -> None:
        started = time.perf_counter()
        try:
            response = await client.get(path, params={"range": VIEWER_RANGE})
        except httpx.HTTPError as exc:
            window.viewer_errors[type(exc).__name__] += 1
            return
        if response.status_code != 200:
            window.viewer_errors[f"HTTP {response.status_code}"] += 1
            return
        window.viewer_times.append(time.perf_counter() - started)

    # -- ingest

    async def ingest(self, template: bytes) -> None:
        """POST a batch every INGEST_BATCH / ingest_rate seconds, on schedule."""
        headers = {"Authorization": f"Bearer {self.ingest_key}", "Content-Type": "application/json"}
        client = self.client(headers, INGEST_CONNECTIONS)
        interval, start, n = INGEST_BATCH / self.args.ingest_rate, time.perf_counter(), 0
        tag, posts = secrets.token_hex(4), set()
        while not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self.stopping.wait(), max(0.0, start + n * interval - time.perf_counter())
                )
            if self.stopping.is_set():
                break
            window = self.window
            window.ingest_rows += INGEST_BATCH
            task = asyncio.create_task(
                self.post(client, template.replace(b"@@", f"{tag}-{n}".encode()), window)
            )
            posts.add(task)
            task.add_done_callback(posts.discard)
            n += 1
        if posts:
            await asyncio.wait(posts)
        await client.aclose()

    async def post(self, client: httpx.AsyncClient, body: bytes, window: Window) -> None:
        try:
            response = await client.post("/api/ingest", content=body)
        except httpx.HTTPError as exc:
            window.ingest_failed[type(exc).__name__] += 1
            return
        if response.status_code != 200:
            window.ingest_failed[f"HTTP {response.status_code}"] += 1
            return
        answer = response.json()
        window.ingest_stored += answer["created"]
        window.ingest_rejected += len(answer["rejected"])

    # -- measurements of the servers

    def rss_mb(self) -> dict[str, float]:
        """Resident memory per role, summed over each process and its children."""
        sizes = {}
        for name, process in self.processes.items():
            try:
                sizes[name] = round(sum(rss_bytes(pid) for pid in process.pids) / 2**20, 1)
            except (OSError, RuntimeError):
                sizes[name] = 0.0  # the process is gone: a flat line at zero says so
        return sizes

    async def proxy_metrics(self) -> tuple[int, int]:
        """(request logs dropped so far, logs waiting in the buffer) from the server's /metrics."""
        try:
            text = (await self.http.get("/metrics")).text
        except httpx.HTTPError:
            return self.dropped_mark, -1
        values = dict(re.findall(r"^(together_dash_proxy_log\w+) ([0-9.e+]+)$", text, re.MULTILINE))
        dropped = values.get("together_dash_proxy_logs_dropped_total", "0")
        return int(float(dropped)), int(float(values.get("together_dash_proxy_log_buffer_size", "0")))


# ---- the run -----------------------------------------------------------------------------------------


async def find_rate(load: Load, args: argparse.Namespace) -> tuple[float, list[dict[str, Any]]]:
    """Step the offered rate up until a step fails twice running; the last step that passed is held."""
    rates = [float(value) for value in args.ramp_rates.split(",")]
    held, steps = None, []
    for rate in rates:
        for attempt in (1, 2):  # a second chance: one busy moment of a shared machine is not the limit
            name = f"ramp {rate:.0f}" + (" again" if attempt == 2 else "")
            step = merged(await load.phase(name, args.ramp_step, rate, "proxy"))
            passed = sustainable(step, args)
            steps.append({**step.summary(), "rate": rate, "attempt": attempt, "sustainable": passed})
            if passed:
                held = rate
                break
        if not passed:
            break
    return held or rates[0], steps


async def confirm_rate(
    load: Load, args: argparse.Namespace, rate: float, steps: list[dict[str, Any]]
) -> float:
    """A step can pass for 20 s at a rate the machine cannot keep up for minutes (queues, the log writer
    and the viewers' queries catch up with it later): the candidate must also pass a TRIAL_S trial by
    the same rule, or the next lower ramp rate is tried, down to the lowest."""
    lower = sorted(float(value) for value in args.ramp_rates.split(",") if float(value) < rate)
    while True:
        trial = merged(await load.phase(f"trial {rate:.0f}", TRIAL_S, rate, "proxy"))
        passed = sustainable(trial, args)
        steps.append({**trial.summary(), "rate": rate, "attempt": "trial", "sustainable": passed})
        if passed or not lower:
            return rate
        rate = lower.pop()
        await load.phase("settle", SETTLE_S)


def sustainable(step: Window, args: argparse.Namespace) -> bool:
    """Every proxied request answered within the p99 bound, the viewers still served, ingest keeping up."""
    summary = step.summary()
    proxy_ok = step.sent > 0 and step.ok == step.sent and summary["proxy_p99_ms"] <= args.p99_bound
    viewers_ok = summary["viewer_errors"] == 0 and (summary["viewer_p95_ms"] or 0) <= args.viewer_bound
    ingest_ok = summary["ingest_failed_posts"] == 0 and summary["ingest_rows_per_s"] >= 0.9 * args.ingest_rate
    return proxy_ok and viewers_ok and ingest_ok


async def drive(load: Load, viewer_names: list[str], password: str, paths: list[str]) -> dict[str, Any]:
    args = load.args
    clients = [await load.log_in(name, password) for name in viewer_names]
    spread = args.viewer_interval / max(1, len(clients))
    background = [
        asyncio.create_task(load.viewer(client, paths, n * spread)) for n, client in enumerate(clients)
    ]
    background.append(asyncio.create_task(load.ingest(ingest_template())))
    print(HEADER)
    load.began = time.perf_counter()
    quiet = merged(await load.phase("quiet", QUIET_S))
    ramp, rate = [], args.rate
    if rate is None:
        rate, ramp = await find_rate(load, args)
        await load.phase("settle", SETTLE_S)
        rate = await confirm_rate(load, args, rate, ramp)
        print(f"-- holding {rate:.0f} req/s (the highest ramp step that also passed its trial)", flush=True)
        await load.phase("settle", SETTLE_S)
    direct = merged(await load.phase("direct", DIRECT_S, rate, "direct"))
    hold_start_rss = load.rss_mb()
    hold = await load.phase("hold", args.duration, rate, "proxy")
    load.stopping.set()
    await asyncio.gather(*background)
    await load.http.aclose()
    return {
        "rate": rate,
        "quiet": quiet,
        "ramp": ramp,
        "direct": direct,
        "hold": hold,
        "hold_start_rss": hold_start_rss,
    }


async def database_connections() -> int | None:
    """Connections to the soak database now: every process's, held or idle (PostgreSQL allows 100)."""
    try:
        async with await psycopg.AsyncConnection.connect(f"{POSTGRES_URL}/postgres") as conn:
            query = "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = %s"
            return (await (await conn.execute(query, [DATABASE])).fetchone())[0]
    except psycopg.OperationalError:
        return None


def stored_logs() -> dict[str, int]:
    """Request logs in the database by source, once the proxy's buffer has been written."""
    with psycopg.connect(f"{POSTGRES_URL}/{DATABASE}") as conn:
        rows = conn.execute("SELECT source, COUNT(*) FROM traffic_requestlog GROUP BY source").fetchall()
    return dict(rows)


def figures(run: dict[str, Any], args: argparse.Namespace, integrity: dict[str, Any]) -> list[dict[str, Any]]:
    """The headline rows for BENCHMARKS.md, each against a baseline from this run."""
    hold, direct, quiet = run["hold_summary"], run["direct_summary"], run["quiet_summary"]
    start_rss, end_rss = run["hold_start_rss"], run["windows"][-1]["rss_mb"]
    rows = [
        figure(
            "proxy rate held, req/s (ok answers)",
            hold["proxy_ok_per_s"],
            run["rate"],
            f"the offered rate for {args.duration:.0f} s",
            hold["proxy_ok_per_s"] >= 0.99 * run["rate"],
        ),
        figure(
            "proxy error rate during the hold, %",
            hold["proxy_error_rate"] * 100,
            None,
            "0",
            hold["proxy_errors"] == 0,
        ),
        figure(
            "proxy p99 during the hold vs direct, ms",
            hold["proxy_p99_ms"],
            direct["proxy_p99_ms"],
            f"added p99 <= {TARGET_ADDED_P99_MS:.0f} ms over direct at the same rate",
            added(hold, direct, "proxy_p99_ms") <= TARGET_ADDED_P99_MS,
        ),
        figure(
            "proxy p50 during the hold vs direct, ms",
            hold["proxy_p50_ms"],
            direct["proxy_p50_ms"],
            "(info)",
            None,
        ),
        figure(
            "viewer request p95 during the hold, ms",
            hold["viewer_p95_ms"],
            quiet["viewer_p95_ms"],
            f"<= {TARGET_VIEWER_P95_MS:.0f} ms, no errors (baseline: no proxy load)",
            (hold["viewer_p95_ms"] or 1e9) <= TARGET_VIEWER_P95_MS and hold["viewer_errors"] == 0,
        ),
        figure(
            "ingest rows/s stored during the hold",
            hold["ingest_rows_per_s"],
            args.ingest_rate,
            f">= {args.ingest_rate:,.0f} rows/s offered, none rejected or failed",
            hold["ingest_rows_per_s"] >= 0.99 * args.ingest_rate
            and hold["ingest_rejected"] + hold["ingest_failed_posts"] == 0,
        ),
        figure(
            "proxy request logs stored / proxied requests",
            integrity["proxy_logs_stored"],
            integrity["proxy_requests_sent"],
            "all stored, none dropped",
            integrity["proxy_logs_stored"] >= integrity["proxy_requests_sent"],
        ),
    ]
    for role in ("server", "worker"):
        rows.append(
            figure(
                f"{role} RSS at the end of the hold, MB",
                end_rss[role],
                start_rss[role],
                f"flat: within {TARGET_RSS_RATIO - 1:.0%} of the start of the hold",
                bool(start_rss[role]) and end_rss[role] <= TARGET_RSS_RATIO * start_rss[role],
            )
        )
    return rows


def added(hold: dict[str, Any], direct: dict[str, Any], stat: str) -> float:
    if hold[stat] is None or direct[stat] is None:
        return float("inf")
    return hold[stat] - direct[stat]


def figure(name: str, value: Any, baseline: Any, target: str, met: bool | None) -> dict[str, Any]:
    ratio = value / baseline if isinstance(value, int | float) and baseline else None
    return {
        "figure": name,
        "value": value,
        "baseline": baseline,
        "ratio": ratio,
        "target": target,
        "meets_target": met,
    }


def report(run: dict[str, Any], integrity: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    hold, direct = run["hold_summary"], run["direct_summary"]
    print(
        f"\nRamp (sustainable: every request a 200 within {TIMEOUT_S:.0f} s and p99 <= "
        f"{run['p99_bound_ms']:.0f} ms):"
    )
    for step in run["ramp"]:
        print(
            f"  {step['rate']:>6.0f} req/s{ATTEMPT_LABELS.get(step['attempt'], '')}: "
            f"{step['proxy_ok_per_s']:>7.1f} ok/s, "
            f"{step['proxy_errors']} errors, p99 {step['proxy_p99_ms']} ms -> "
            f"{'sustainable' if step['sustainable'] else 'NOT sustainable'}"
        )
    print(
        f"Hold at {run['rate']:.0f} req/s for {hold['seconds']:.0f} s: {hold['proxy_sent']:,} sent, "
        f"{hold['proxy_ok']:,} ok, {hold['proxy_errors']} errors {hold['proxy_error_kinds'] or ''}"
    )
    for stat in ("proxy_p50_ms", "proxy_p95_ms", "proxy_p99_ms"):
        print(
            f"  {stat[6:9]}: proxy {hold[stat]} ms, direct {direct[stat]} ms, "
            f"added {added(hold, direct, stat):.2f} ms"
        )
    print(f"  load generator send lag p99: {hold['send_lag_p99_ms']} ms (how late requests left)")
    print(
        f"  request logs stored: {integrity['proxy_logs_stored']:,} by the proxy for "
        f"{integrity['proxy_requests_sent']:,} requests sent to it, {integrity['ingest_logs_stored']:,} "
        "by ingest"
    )
    for role in ("worker", "beat"):
        logged = integrity[f"{role}_log_errors"]
        print(f"  celery {role}: {logged['count']} error lines in its log", *logged["first"], sep="\n    ")
    print(f"\n{'figure':<48}{'value':>12}{'baseline':>12}{'ratio':>8}  verdict target")
    for row in rows:
        ratio = f"{row['ratio']:.2f}x" if row["ratio"] is not None else "-"
        verdict = {True: "met", False: "MISSED", None: "-"}[row["meets_target"]]
        baseline = "-" if row["baseline"] is None else f"{row['baseline']:,.1f}"
        print(
            f"{row['figure']:<48}{row['value']:>12,.2f}{baseline:>12}{ratio:>8}  {verdict:<7} {row['target']}"
        )


def wait_for_logs(expected: int) -> dict[str, int]:
    """Give the proxy's log writer a few seconds to write its last batches."""
    deadline, stored = time.monotonic() + 15, {}
    while time.monotonic() < deadline:
        stored = stored_logs()
        if stored.get("proxy", 0) >= expected:
            break
        time.sleep(0.5)
    return stored


def run(args: argparse.Namespace) -> dict[str, Any]:
    admin_sql(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
    admin_sql(f'CREATE DATABASE "{DATABASE}"')
    flush_redis()
    password = secrets.token_urlsafe(16)
    args.load_average = round(os.getloadavg()[0], 2)  # other work on the machine shows in every figure
    env = production_env()
    collect_static(env)
    with contextlib.ExitStack() as stack:
        sim = stack.enter_context(Simulator())
        dash = stack.enter_context(Dashboard(upstream=sim.base_url, env=env, workers=args.workers))
        worker = stack.enter_context(
            Celery(dash.env, "worker", "--concurrency=2", "--without-mingle", "--without-gossip")
        )
        beat = stack.enter_context(Celery(dash.env, "beat"))
        keys = {name: dash.create_app_key(f"soak-{name}") for name in ("proxy", "ingest")}
        keys["simulator"] = sim.base_url
        viewers = create_viewers(dash, args.viewers, password)
        paths = ["/", *chart_endpoints(dash.env).values()]
        processes = {"server": dash, "worker": worker, "beat": beat, "simulator": sim}
        print(
            f"soak: simulator, uvicorn x{args.workers}, celery worker (2 processes) and beat on "
            f"PostgreSQL ({DATABASE}) and Redis; {args.viewers} viewers on {paths}; ingest "
            f"{args.ingest_rate:,.0f} rows/s; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        load = Load(dash, keys, processes, args)
        result = run_loop(with_load(load, viewers, password, paths))
        sent = WARM_UP + sum(
            window.sent - window.errors[NOT_SENT] for window in load.windows if window.target == "proxy"
        )
        stored = wait_for_logs(sent)
        integrity = {
            "proxy_requests_sent": sent,
            "proxy_logs_stored": stored.get("proxy", 0),
            "ingest_logs_stored": stored.get("ingest", 0),
            "worker_log_errors": worker.logged_errors(),
            "beat_log_errors": beat.logged_errors(),
        }
    admin_sql(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
    flush_redis()
    return finish(load, result, args, integrity, paths)


async def with_load(load: Load, viewers: list[str], password: str, paths: list[str]) -> dict[str, Any]:
    await warm_up(load)
    return await drive(load, viewers, password, paths)


async def warm_up(load: Load) -> None:
    """Connections, the key cache and lazy imports, on both paths, before anything is measured."""
    for target in load.targets.values():
        pool = Pool(*target)
        for _ in range(WARM_UP):
            await pool.send()
        await pool.close()


def finish(
    load: Load, result: dict[str, Any], args: argparse.Namespace, integrity: dict[str, Any], paths: list[str]
) -> dict[str, Any]:
    hold = merged(result["hold"])
    results = {
        "rate": result["rate"],
        "p99_bound_ms": args.p99_bound,
        "ramp": result["ramp"],
        "quiet_summary": result["quiet"].summary(),
        "direct_summary": result["direct"].summary(),
        "hold_summary": hold.summary(),
        "hold_start_rss": result["hold_start_rss"],
        "windows": [window.row() for window in load.windows],
        "integrity": integrity,
        "settings": {
            "duration_s": args.duration,
            "viewers": args.viewers,
            "viewer_interval_s": args.viewer_interval,
            "viewer_paths": paths,
            "ingest_rate": args.ingest_rate,
            "ingest_batch": INGEST_BATCH,
            "window_s": WINDOW_S,
            "timeout_s": TIMEOUT_S,
            "uvicorn_workers": args.workers,
            "cpus": os.cpu_count(),
            "load_average_at_start": args.load_average,
            "ramp_step_s": args.ramp_step,
            "ramp_rates": args.ramp_rates,
        },
    }
    results["figures"] = figures(results, args, integrity)
    report(results, integrity, results["figures"])
    return results


# ---- the plot ----------------------------------------------------------------------------------------


def plot(results: dict[str, Any], path: Path) -> None:
    """Latency, rates, errors and memory over the whole run, one panel each, phases shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["windows"]
    t = [row["t"] + row["seconds"] / 2 for row in rows]
    fig, axes = plt.subplots(7, 1, figsize=(11, 19), sharex=True)
    panels = [
        (
            "proxy latency, ms (log)",
            [("p50", "proxy_p50_ms"), ("p95", "proxy_p95_ms"), ("p99", "proxy_p99_ms")],
        ),
        ("proxy, req/s", [("ok answers", "proxy_ok_per_s"), ("offered", "rate")]),
        ("ingest rows/s stored", [("stored", "ingest_rows_per_s")]),
        ("viewer request p95, ms", [("p95", "viewer_p95_ms")]),
        (
            "errors per window",
            [
                ("proxy", "proxy_errors"),
                ("viewer", "viewer_errors"),
                ("ingest posts", "ingest_failed_posts"),
                ("ingest rejected", "ingest_rejected"),
                ("logs dropped", "logs_dropped"),
            ],
        ),
        ("PostgreSQL connections", [("soak database", "db_connections")]),
    ]
    for axis, (label, series) in zip(axes, panels, strict=False):
        for name, key in series:
            axis.plot(
                t,
                [row[key] if row[key] is not None else float("nan") for row in rows],
                marker=".",
                linestyle="--" if key == "rate" else "-",  # offered: ok answers lie on it when all is well
                label=name,
            )
        axis.set_ylabel(label)
        axis.legend(loc="upper left", fontsize=8)
        if axis is not axes[0]:  # latency is on a log scale: its spread spans decades
            axis.set_ylim(bottom=0)
    axes[0].set_yscale("log")
    axes[2].axhline(results["settings"]["ingest_rate"], color="grey", linestyle=":", label="target")
    for role in ("server", "worker", "beat"):
        axes[6].plot(t, [row["rss_mb"].get(role, float("nan")) for row in rows], marker=".", label=role)
    axes[6].set_ylabel("RSS, MB")
    axes[6].legend(loc="upper left", fontsize=8)
    axes[6].set_ylim(bottom=0)
    axes[6].set_xlabel("seconds since the load began")
    shade_phases(axes, rows)
    fig.suptitle(
        f"Soak: proxy held at {results['rate']:.0f} req/s with "
        f"{results['settings']['viewers']} viewers and {results['settings']['ingest_rate']:,.0f} "
        "ingest rows/s"
    )
    fig.tight_layout(rect=(0, 0, 1, 0.985))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def shade_phases(axes: Any, rows: list[dict[str, Any]]) -> None:
    """A band per phase (ramp steps alternate), named on the top panel."""
    spans: list[list[Any]] = []
    for row in rows:
        if spans and spans[-1][0] == row["phase"]:
            spans[-1][2] = row["t"] + row["seconds"]
        else:
            spans.append([row["phase"], row["t"], row["t"] + row["seconds"]])
    colors = {"quiet": "#eeeeee", "settle": "#eeeeee", "direct": "#dbeafe", "hold": "#dcfce7"}
    total = spans[-1][2]
    for n, (name, start, end) in enumerate(spans):
        color = colors.get(name, "#fef3c7" if n % 2 else "#fde68a")
        for axis in axes:
            axis.axvspan(start, end, color=color, alpha=0.6, linewidth=0)
        narrow = end - start < 0.08 * total  # a ramp step's band: its name goes upright to fit
        axes[0].text(
            (start + end) / 2,
            0.03,
            name.replace("ramp ", "").replace(" again", " (2)"),
            transform=axes[0].get_xaxis_transform(),
            ha="center",
            va="bottom",
            rotation=90 if narrow else 0,
            fontsize=7,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=300.0, help="seconds to hold the rate (300)")
    parser.add_argument("--viewers", type=int, default=20)
    parser.add_argument("--viewer-interval", type=float, default=5.0, help="seconds between refreshes (5)")
    parser.add_argument("--ingest-rate", type=float, default=5000.0, help="ingest rows per second (5,000)")
    parser.add_argument("--ramp-rates", default=RAMP_RATES, help=f"proxy req/s per ramp step ({RAMP_RATES})")
    parser.add_argument("--ramp-step", type=float, default=20.0, help="seconds per ramp step (20)")
    parser.add_argument("--p99-bound", type=float, default=250.0, help="p99 of a sustainable step, ms (250)")
    parser.add_argument("--viewer-bound", type=float, default=2 * TARGET_VIEWER_P95_MS,
                        help="viewer p95 of a sustainable step, ms (300)")
    parser.add_argument("--rate", type=float, default=None, help="hold this rate, skipping the ramp")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (Procfile: 1)")
    args = parser.parse_args()
    results = run(args)
    path = write_results("soak", results)
    plot(results, RESULTS_DIR / "soak.png")
    print(f"wrote {path.relative_to(ROOT)} and bench/results/soak.png")


if __name__ == "__main__":
    main()
