"""Real parts the tests need from the machine (a server, a binary) and what their absence means."""
from __future__ import annotations

import os
import subprocess

import pytest


def require_ci_service(reason: str) -> None:
    """A missing service fails the suite under CI=true (CI provides it) and skips it elsewhere."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(reason)


def wait_or_kill(process: subprocess.Popen, timeout: float = 10.0) -> None:
    """Give a process that was asked to stop `timeout` seconds, then kill it; either way it is reaped."""
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
