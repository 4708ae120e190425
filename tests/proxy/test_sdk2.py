"""together 2.x through the proxy, from its own virtualenv (.venv-sdk2): the line many apps still run.

Its base URL ends in /v1, like the OpenAI SDK's. The main virtualenv holds together 3.x, so the 2.x
calls run in a subprocess (sdk2_driver.py) and this test checks what they got and what the proxy logged.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from together_dash.keys.models import TogetherKey
from together_dash.keys.services import create_app_key
from together_dash.pollers.testing import new_secret
from together_dash.proxy.testing import RunningProxy, running_proxy
from together_dash.simulator.testing import RunningSimulator
from together_dash.traffic.models import RequestLog

ROOT = Path(__file__).resolve().parents[2]
SDK2_PYTHON = ROOT / ".venv-sdk2" / "bin" / "python"
DRIVER = Path(__file__).with_name("sdk2_driver.py")


@pytest.fixture
def proxy(transactional_db: None, fresh_simulator: RunningSimulator) -> Iterator[RunningProxy]:
    with running_proxy(fresh_simulator.base_url) as running:
        yield running


def test_together_2x_works_through_the_proxy_and_every_call_is_logged_with_its_path(
    proxy: RunningProxy, tmp_path: Path
) -> None:
    if not SDK2_PYTHON.exists():
        pytest.fail(f"{SDK2_PYTHON} is missing: run `make .venv-sdk2/.stamp` (make test does it)")
    TogetherKey.create(name="main", secret=new_secret())
    app_key = create_app_key("sdk2")[1]

    done = subprocess.run([str(SDK2_PYTHON), str(DRIVER), proxy.base_url, app_key, str(tmp_path)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert proxy.proxy.drain_logs()

    assert str(results["version"]).startswith("2.")
    assert results["chat"] is True and results["stream"] is True and results["whoami"] is True
    assert str(results["file"]).startswith("file-") and str(results["fine_tune"]).startswith("ft-")
    assert results["batch"]
    logged = set(RequestLog.objects.values_list("method", "endpoint"))
    assert {("POST", "/v1/chat/completions"), ("GET", "/v1/whoami"), ("POST", "/v1/files"),
            ("POST", "/v1/fine-tunes"), ("GET", "/v1/fine-tunes/{id}"), ("POST", "/v1/batches")} <= logged
    assert not RequestLog.objects.filter(status_code__gte=400).exists()
