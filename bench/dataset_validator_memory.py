"""Bounded memory of the dataset validator: validate a 1 GB JSONL file and compare peak RSS to a baseline.

The baseline, in the same run, is a process that only reads the same file line by line. Each measurement
runs in a fresh child process so that its peak RSS is its own. Writes bench/results/dataset_validator.json.

    .venv/bin/python bench/dataset_validator_memory.py [--size-mb 1024] [--keep FILE]
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "dataset_validator.json"
INVALID_EVERY = 100  # lines; enough errors to pass the report's cap of 1,000
WORDS = "the model answers questions about invoices refunds shipping and account settings politely".split()


def load_validator() -> Any:
    """The validator module loaded from its file: importing the together_dash package would load Django."""
    spec = importlib.util.spec_from_file_location(
        "datasets", ROOT / "together_dash" / "together" / "datasets.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


# Both children load it, so the baseline differs from the validator run only in what it does.
validate_dataset = load_validator().validate_dataset


def sample_line(rng: random.Random, number: int) -> bytes:
    """One conversation sample of 0.2 to 8 KB; every INVALID_EVERY-th line is broken in one of three ways."""
    turns = rng.randint(1, 3)
    messages = [{"role": "system", "content": "You are a support agent."}]
    for _ in range(turns):
        for role in ("user", "assistant"):
            words = rng.choices(WORDS, k=rng.randint(10, 400))
            messages.append({"role": role, "content": " ".join(words)})
    if number % INVALID_EVERY == 0:
        broken = number // INVALID_EVERY % 3
        if broken == 0:
            return b'{"messages": [\n'
        if broken == 1:
            del messages[1]["role"]
        else:
            messages[2]["role"] = "user"
    return json.dumps({"messages": messages}).encode() + b"\n"


def generate(path: Path, size_bytes: int) -> int:
    """Write the file line by line up to size_bytes; returns the number of lines."""
    rng = random.Random(9)  # noqa: S311 - test data
    pool = [sample_line(rng, number) for number in range(1, 4001)]  # INVALID_EVERY divides 4000
    lines = written = 0
    with path.open("wb", buffering=4 * 2**20) as out:
        while written < size_bytes:
            line = pool[lines % len(pool)]
            out.write(line)
            written += len(line)
            lines += 1
    return lines


def peak_rss_mb() -> float:
    """This process's peak resident set size since it started its interpreter."""
    # Linux's ru_maxrss survives exec, so a child would report its parent's size at fork; VmHWM is the
    # high-water mark of the current address space only.
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_baseline(path: Path) -> dict[str, Any]:
    """Only read the file line by line."""
    started = time.perf_counter()
    lines = 0
    with path.open("rb") as stream:
        for _ in stream:
            lines += 1
    return {"seconds": time.perf_counter() - started, "lines": lines, "peak_rss_mb": peak_rss_mb()}


def child_validate(path: Path) -> dict[str, Any]:
    """Validate the file with a context length, so the token estimate runs on every line too."""
    started = time.perf_counter()
    report = validate_dataset(path, context_length=2048)
    return {
        "seconds": time.perf_counter() - started,
        "peak_rss_mb": peak_rss_mb(),
        "ok": report.ok,
        "samples": report.samples,
        "errors": report.error_count,
        "errors_listed": len(report.errors),
        "warnings": report.warning_count,
    }


def child_tracemalloc(path: Path) -> dict[str, Any]:
    """The validator's peak Python heap, as tracemalloc sees it (slower: run separately)."""
    tracemalloc.start()
    validate_dataset(path, context_length=2048)
    _, peak = tracemalloc.get_traced_memory()
    return {"python_heap_peak_mb": peak / 2**20}


CHILDREN = {"baseline": child_baseline, "validate": child_validate, "tracemalloc": child_tracemalloc}


def measure(kind: str, path: Path) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, __file__, "--child", kind, str(path)], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)


def run(size_mb: int, keep: Path | None) -> dict[str, Any]:
    """Generate, measure, write the results; the generated file is deleted unless kept."""
    with tempfile.TemporaryDirectory(prefix="dataset-bench-") as folder:
        path = keep or Path(folder) / "train.jsonl"
        lines = generate(path, size_mb * 2**20)
        size = path.stat().st_size
        baseline, validate, heap = (measure(kind, path) for kind in ("baseline", "validate", "tracemalloc"))
    megabytes = size / 2**20
    return {
        "file_mb": round(megabytes, 1),
        "lines": lines,
        "baseline_peak_rss_mb": round(baseline["peak_rss_mb"], 1),
        "validator_peak_rss_mb": round(validate["peak_rss_mb"], 1),
        "validator_extra_rss_mb": round(validate["peak_rss_mb"] - baseline["peak_rss_mb"], 1),
        "validator_python_heap_peak_mb": round(heap["python_heap_peak_mb"], 1),
        "baseline_mb_per_s": round(megabytes / baseline["seconds"], 1),
        "validator_mb_per_s": round(megabytes / validate["seconds"], 1),
        "validator_seconds": round(validate["seconds"], 1),
        "report": {key: validate[key] for key in ("ok", "samples", "errors", "errors_listed", "warnings")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--keep", type=Path, help="write the generated file here and keep it")
    parser.add_argument("--child", choices=CHILDREN, help=argparse.SUPPRESS)
    parser.add_argument("path", nargs="?", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(CHILDREN[args.child](args.path)))
        return
    results = run(args.size_mb, args.keep)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
