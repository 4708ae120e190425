"""Debian's Prometheus and promtool for the tests: started on a free loopback port, asked over HTTP."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from bench.common import free_port
from tests.services import require_ci_service, wait_or_kill

PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"


def require(binary: str) -> None:
    """A missing binary fails the test under CI=true (CI installs it) and skips it elsewhere."""
    if not os.path.exists(binary):
        require_ci_service(f"{binary} is missing: `make test` installs Debian's prometheus package")


class Prometheus:
    """A running Prometheus server and the few API calls the tests make."""

    def __init__(self, url: str) -> None:
        self.url = url

    def api(self, path: str, **params: str) -> Any:
        response = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        response.raise_for_status()
        body = response.json()
        assert body["status"] == "success", body
        return body["data"]

    def targets(self) -> dict[str, dict[str, Any]]:
        """The active targets by job name (one target per job here)."""
        return {target["labels"]["job"]: target for target in self.api("targets")["activeTargets"]}

    def value(self, query: str) -> float | None:
        """The value of an instant query that yields one series, or None while it yields nothing."""
        result = self.api("query", query=query)["result"]
        return float(result[0]["value"][1]) if result else None


@contextlib.contextmanager
def running_prometheus(folder: Path, scrape_configs: list[dict[str, Any]]) -> Iterator[Prometheus]:
    """Prometheus scraping every second, with its data in folder; stopped (killed if need be) afterwards."""
    require(PROMETHEUS)
    config = folder / "prometheus.yml"
    # JSON is YAML: Prometheus reads it as its configuration file.
    config.write_text(json.dumps({
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": scrape_configs,
    }))
    port = free_port()
    log = (folder / "prometheus.log").open("w")
    process = subprocess.Popen(
        [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={folder / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_ready(f"{url}/-/ready", process, folder / "prometheus.log")
        yield Prometheus(url)
    finally:
        process.terminate()
        wait_or_kill(process)
        log.close()


def wait_for_ready(url: str, process: subprocess.Popen, log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"prometheus exited: {log.read_text()[-2000:]}"
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.05)
    raise AssertionError(f"prometheus was not ready within {timeout} s: {log.read_text()[-2000:]}")
