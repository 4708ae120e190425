"""`manage.py together_simulator`: options, scenario files, and a real server process."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from django.core.management import CommandError, call_command

from tests.waiting import wait_until
from together_dash.simulator.management.commands.together_simulator import build_scenario

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def scenario_file(tmp_path: Path) -> Path:
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps({"keys": ["from-file"], "latency_ms": 5, "credits_after_calls": 3}))
    return path


def test_options_override_the_scenario_file(scenario_file: Path) -> None:
    scenario = build_scenario(
        {"scenario": str(scenario_file), "keys": "k1, k2", "latency_ms": 100, "job_speed": 20.0}
    )

    assert scenario.keys == ("k1", "k2")
    assert scenario.latency_ms == 100
    assert scenario.job_speed == 20
    assert scenario.credits_after_calls == 3


def test_a_bad_scenario_file_is_a_command_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"no_such_knob": 1}))

    with pytest.raises(CommandError, match="no_such_knob"):
        call_command("together_simulator", "--scenario", str(path))


@pytest.fixture
def server_process(scenario_file: Path) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "together_simulator",
            "--port",
            str(port),
            "--keys",
            "k1,k2",
            "--scenario",
            str(scenario_file),
            "--job-speed",
            "10",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    root = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(f"{root}/_sim/health"), 20, "the simulator command did not start serving")
        yield root
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=10)


def _answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=0.5)
    except httpx.TransportError:
        return False
    return True


def test_the_command_serves_the_api(server_process: str) -> None:
    ok = httpx.get(f"{server_process}/v1/models", headers={"Authorization": "Bearer k2"})
    refused = httpx.get(f"{server_process}/v1/models", headers={"Authorization": "Bearer from-file"})
    state = httpx.get(f"{server_process}/_sim/state").json()

    assert ok.status_code == 200
    assert isinstance(ok.json(), list)
    assert refused.status_code == 401
    assert state["scenario"]["job_speed"] == 10
    assert state["credits_remaining"] == 3
