"""Run every benchmark in bench/ one after the other, then write BENCHMARKS.md from their results.

A benchmark is any bench/*.py script with a top-level main(). Each runs in its own process with its
output shown as it comes; one that fails is reported as failed and the others still run, and the exit
code is non-zero at the end. BENCHMARKS.md gets the machine, the command, and per benchmark a table of
its headline figures: the figure, its baseline from the same run, the ratio and the DESIGN.md target.
A results file with a "figures" list (figure, value, baseline, ratio, target, meets_target) is shown as
it is; the older result shapes are read through HEADLINES below; anything else as its plain numbers.

    .venv/bin/python bench/run_all.py [--only NAME ...] [--skip NAME ...]
"""

from __future__ import annotations

import argparse
import ast
import fnmatch
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
REPORT = ROOT / "BENCHMARKS.md"
TAIL_LINES = 30  # output lines kept in the report for a failed benchmark
DEFAULT_POSTGRES = "postgres://postgres@127.0.0.1:5432/postgres"


@dataclass(frozen=True)
class Headline:
    """One figure read from a results file: dotted paths (a segment may be a glob), the target in words."""

    figure: str
    value: str
    baseline: str | None
    target: str
    met: str | Callable[[float, float | None], bool] | None = None


HEADLINES: dict[str, list[Headline]] = {
    "proxy_overhead": [
        Headline(
            "sequential p50 through the proxy, ms",
            "results.sequential.proxy.p50",
            "results.sequential.direct.p50",
            "added median <= 1.5 ms",
            "verdict.sequential_target_met",
        ),
        Headline(
            "64 concurrent p99 through the proxy, ms",
            "results.concurrent*.proxy.p99",
            "results.concurrent*.direct.p99",
            "added p99 <= 25 ms",
            "verdict.concurrent_target_met",
        ),
    ],
    "ingest_rate": [
        Headline(
            "record_entries, proxy batches, rows/s",
            "record_entries_proxy_rows_per_s",
            "baseline_copy_rows_per_s",
            ">= 20,000 rows/s",
            lambda value, _: value >= 20_000,
        ),
        Headline(
            "POST /api/ingest, one uvicorn process per CPU, rows/s",
            "http_ingest_workers_rows_per_s",
            "baseline_copy_rows_per_s",
            ">= 20,000 rows/s",
            lambda value, _: value >= 20_000,
        ),
        Headline(
            "POST /api/ingest, one uvicorn process, rows/s",
            "http_ingest_rows_per_s",
            "baseline_copy_rows_per_s",
            "(one process)",
        ),
    ],
    "poller_fanout": [
        Headline(
            "worst poll round of 100 keys, s",
            "worst_round_s",
            "bare_fan_out_s",
            "100 keys within 5 s against a 100 ms upstream",
            "meets_target",
        ),
    ],
    "proxy_memory": [
        Headline(
            "RSS after the requests, MB",
            "many_requests.rss_end_mb",
            "many_requests.rss_start_mb",
            "RSS flat (within 10%) over 100k requests",
            lambda value, baseline: baseline is not None and value <= 1.1 * baseline,
        ),
        Headline(
            "RSS peak during a 50 MB stream (slow reader), MB",
            "stream_slow_reader.rss_peak_mb",
            "stream_slow_reader.rss_before_mb",
            "a 50 MB streamed response never buffered whole",
            lambda value, baseline: baseline is not None and value - baseline < 50,
        ),
    ],
    "dataset_validator": [
        Headline(
            "peak RSS validating a 1 GB file, MB",
            "validator_peak_rss_mb",
            "baseline_peak_rss_mb",
            "bounded memory, whatever the file size",
        ),
    ],
}


@dataclass
class Run:
    """One benchmark script's run: how it ended and which results files it wrote."""

    script: Path
    summary: str
    exit_code: int | None = None
    seconds: float = 0.0
    tail: list[str] = field(default_factory=list)
    results: list[Path] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.script.stem

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


# ---- finding and running the benchmarks --------------------------------------------------------------


def benchmarks() -> list[Run]:
    """Every bench/*.py with a top-level main(), in name order (this runner excluded)."""
    runs = []
    for script in sorted(BENCH.glob("*.py")):
        if script.resolve() == Path(__file__).resolve():
            continue
        tree = ast.parse(script.read_text())
        if any(isinstance(node, ast.FunctionDef) and node.name == "main" for node in tree.body):
            summary = (ast.get_docstring(tree) or "").strip().splitlines()
            runs.append(Run(script, summary[0] if summary else ""))
    return runs


def result_times() -> dict[Path, float]:
    return {path: path.stat().st_mtime for path in RESULTS.glob("*.json")} if RESULTS.exists() else {}


def execute(run: Run) -> None:
    """Run one script, echoing its output, and note the results files of its name that it rewrote."""
    print(f"\n==== {run.name} ====", flush=True)
    before = result_times()
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, str(run.script)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    )
    assert process.stdout is not None
    for line in process.stdout:
        print(line, end="", flush=True)
        run.tail = [*run.tail[-(TAIL_LINES - 1) :], line.rstrip("\n")]
    run.exit_code = process.wait()
    run.seconds = time.perf_counter() - started
    changed = [path for path, mtime in result_times().items() if before.get(path) != mtime]
    # By name as well as by time: another process may rewrite other results files meanwhile.
    run.results = sorted(path for path in changed if belongs(path, run.name))
    print(f"==== {run.name}: {'ok' if run.ok else f'FAILED (exit {run.exit_code})'} in {run.seconds:.0f} s")


def belongs(path: Path, script: str) -> bool:
    """True for the script's own results: named after it or a prefix of it (dataset_validator.json)."""
    return script == path.stem or script.startswith(path.stem + "_")


# ---- reading results ---------------------------------------------------------------------------------


def lookup(data: Any, path: str) -> Any:
    """Follow a dotted path; a segment may be a glob (the first matching key wins). None when missing."""
    for segment in path.split("."):
        if not isinstance(data, dict):
            return None
        key = next((k for k in data if fnmatch.fnmatchcase(str(k), segment)), None)
        if key is None:
            return None
        data = data[key]
    return data


def figure_rows(name: str, data: dict[str, Any]) -> list[dict[str, Any]]:
    """The headline rows of one results file, in the common shape."""
    if isinstance(data.get("figures"), list):
        return data["figures"]
    rows = []
    for headline in HEADLINES.get(name, []):
        value, baseline = lookup(data, headline.value), lookup(data, headline.baseline or "")
        if not isinstance(value, int | float):
            continue
        met = headline.met
        verdict = lookup(data, met) if isinstance(met, str) else met(value, baseline) if met else None
        ratio = value / baseline if isinstance(baseline, int | float) and baseline else None
        rows.append(
            {
                "figure": headline.figure,
                "value": value,
                "baseline": baseline,
                "ratio": ratio,
                "target": headline.target,
                "meets_target": verdict,
            }
        )
    return rows


def plain_numbers(data: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Every scalar of a results file, by dotted path, for files without headlines."""
    if isinstance(data, dict):
        return [item for key, value in data.items() for item in plain_numbers(value, f"{prefix}{key}.")]
    if isinstance(data, list):
        return []  # series are in the JSON; the report keeps the scalars
    return [(prefix.rstrip("."), data)]


# ---- the report --------------------------------------------------------------------------------------


def number(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def verdict(met: bool | None) -> str:
    return {True: "met", False: "**missed**", None: "-"}[met]


def results_section(path: Path) -> list[str]:
    data = json.loads(path.read_text())
    rows = figure_rows(path.stem, data) if isinstance(data, dict) else []
    lines = [f"Results: `bench/results/{path.name}`", ""]
    if rows:
        lines += ["| figure | value | baseline | ratio | target | verdict |", "|---|---:|---:|---:|---|---|"]
        for row in rows:
            ratio = f"{row['ratio']:.2f}x" if isinstance(row.get("ratio"), int | float) else "-"
            lines.append(
                f"| {row['figure']} | {number(row['value'])} | {number(row.get('baseline'))} | {ratio} "
                f"| {row.get('target', '')} | {verdict(row.get('meets_target'))} |"
            )
        return [*lines, ""]
    lines += ["| figure | value |", "|---|---:|"]
    lines += [f"| {key} | {number(value)} |" for key, value in plain_numbers(data)[:60]]
    return [*lines, ""]


def run_section(run: Run) -> list[str]:
    lines = [f"## {run.name}", "", run.summary, ""]
    if not run.ok:
        lines += [
            f"**FAILED** (exit code {run.exit_code}) after {run.seconds:.0f} s. Last output:",
            "",
            "```",
            *run.tail,
            "```",
            "",
        ]
    if run.ok and not run.results:
        lines += ["(no results file written in this run; its figures are in its output)", ""]
    for path in run.results:
        lines += results_section(path)
    return lines


def machine() -> list[tuple[str, str]]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in _read("/proc/cpuinfo").splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    memory = next(
        (
            int(line.split()[1])
            for line in _read("/proc/meminfo").splitlines()
            if line.startswith("MemTotal:")
        ),
        0,
    )
    return [
        ("CPU", cpu),
        ("cores", str(os.cpu_count())),
        ("RAM", f"{memory / 2**20:.1f} GiB"),
        ("OS", platform.platform()),
        ("Python", platform.python_version()),
        ("PostgreSQL", postgres_version()),
    ]


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def postgres_version() -> str:
    url = os.environ.get("DATABASE_URL", "")
    url = url if url.startswith("postgres") else DEFAULT_POSTGRES
    try:
        import psycopg

        with psycopg.connect(url, connect_timeout=3) as conn:
            return conn.execute("SHOW server_version").fetchone()[0]
    except Exception as exc:  # the report must still be written without a database
        return f"unavailable ({type(exc).__name__})"


def write_report(runs: list[Run], command: str, started: datetime) -> None:
    lines = [
        "# Benchmarks",
        "",
        f"Written by `{command}` on {started:%Y-%m-%d %H:%M} UTC. Each figure is measured against a "
        "baseline in the same run; targets are DESIGN.md's performance targets.",
        "",
        "## Machine",
        "",
        "| | |",
        "|---|---|",
    ]
    lines += [f"| {key} | {value} |" for key, value in machine()]
    lines += ["", "## Runs", "", "| benchmark | status | seconds |", "|---|---|---:|"]
    lines += [
        f"| {run.name} | {'ok' if run.ok else f'**failed** (exit {run.exit_code})'} | {run.seconds:.0f} |"
        for run in runs
    ]
    lines.append("")
    for run in runs:
        lines += run_section(run)
    REPORT.write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", default=[], help="run only these benchmarks (script names)")
    parser.add_argument("--skip", nargs="+", default=[], help="do not run these benchmarks")
    args = parser.parse_args()
    runs = [
        run for run in benchmarks() if (not args.only or run.name in args.only) and run.name not in args.skip
    ]
    started = datetime.now(UTC)
    for run in runs:
        execute(run)
    command = " ".join(["python bench/run_all.py", *sys.argv[1:]])
    write_report(runs, command, started)
    failed = [run.name for run in runs if not run.ok]
    print(
        f"\nWrote {REPORT.relative_to(ROOT)}: {len(runs) - len(failed)} ran, {len(failed)} failed"
        + (f" ({', '.join(failed)})" if failed else "")
    )
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
