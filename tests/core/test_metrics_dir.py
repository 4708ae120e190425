"""Many web and proxy processes, one scrape: each writes its series to the shared folder, a scrape adds up."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]

# One proxy process: it counts `n` chat requests and holds `buffered` logs, then waits for a line on stdin.
PROXY_PROCESS = """
import sys
from together_dash.proxy import metrics
n, buffered = int(sys.argv[1]), int(sys.argv[2])
for _ in range(n):
    metrics.count_request("chat/completions", 200)
metrics.observe_upstream_latency("chat/completions", 0.2)
metrics.LOG_BUFFER_SIZE.set(buffered)
print("ready", flush=True)
sys.stdin.readline()
"""
# The process that answers the scrape: the processes' series as /metrics shows them.
SCRAPE = """
import django
django.setup()
from together_dash.metrics.exposition import exposition
print(exposition(["proxy"]).decode())
"""
MODE = """
import sys
from together_dash.core import metrics_dir
if sys.argv[2] == "late":
    import prometheus_client  # noqa: F401
metrics_dir.share_between_processes(sys.argv[1])
from prometheus_client import values
print(values.ValueClass._multiprocess if hasattr(values.ValueClass, "_multiprocess") else False)
"""


def env_for(folder: Path, var_dir: Path) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name != "PROMETHEUS_MULTIPROC_DIR"}
    return {**env, "PROMETHEUS_MULTIPROC_DIR": str(folder), "TOGETHER_DASH_VAR_DIR": str(var_dir),
            "DJANGO_SETTINGS_MODULE": "together_dash.settings"}


def start(code: str, *args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=ROOT, env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text) for sample in family.samples
    }


def test_one_scrape_counts_the_requests_of_every_process_and_the_buffers_of_the_live_ones(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "prometheus"
    folder.mkdir()
    env = env_for(folder, tmp_path)
    first, second = start(PROXY_PROCESS, "7", "3", env=env), start(PROXY_PROCESS, "5", "4", env=env)
    try:
        assert first.stdout.readline().strip() == second.stdout.readline().strip() == "ready"
        first.communicate("\n", timeout=30)  # the first one ends: its gauge is no longer current
        scrape = subprocess.run([sys.executable, "-c", SCRAPE], cwd=ROOT, env=env, text=True,
                                capture_output=True, timeout=60, check=True)
    finally:
        for process in (first, second):
            if process.poll() is None:
                process.communicate("\n", timeout=30)

    found = samples(scrape.stdout)
    chat = (("endpoint", "chat/completions"),)
    chat_ok = (*chat, ("status_class", "2xx"))
    assert found[("together_dash_proxy_requests_total", chat_ok)] == 12
    assert found[("together_dash_proxy_upstream_latency_seconds_count", chat)] == 2
    assert found[("together_dash_proxy_log_buffer_size", ())] == 4
    assert not list(folder.glob(f"gauge_livesum_{first.pid}.db"))
    assert list(folder.glob(f"counter_{first.pid}.db"))  # its counts stay part of the totals


def test_a_web_process_shares_its_series_only_when_it_sets_the_folder_before_the_first_import(
    tmp_path: Path,
) -> None:
    env = {name: value for name, value in os.environ.items() if name != "PROMETHEUS_MULTIPROC_DIR"}
    folder = tmp_path / "shared"

    def mode(path: str, when: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", MODE, path, when], cwd=ROOT, env=env, text=True,
                              capture_output=True, timeout=60, check=True)

    early = mode(str(folder), "early")
    late = mode(str(folder / "late"), "late")
    off = mode("", "early")

    assert early.stdout.strip() == "True" and folder.is_dir()
    assert late.stdout.strip() == "False"
    assert "only its own series" in late.stderr
    assert off.stdout.strip() == "False"
