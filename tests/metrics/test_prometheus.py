"""A real server (uvicorn, two workers, as in production) scraped with its token and by a real Prometheus.

The server is bench's Dashboard in demo mode against the test simulator: a SQLite database, cache and
broker of its own, the proxy at /v1, METRICS_TOKEN set and a folder of its own for its workers' series.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench.common import Dashboard
from tests.metrics._prometheus import running_prometheus
from tests.metrics.conftest import Exposition
from tests.waiting import wait_until
from together_dash.simulator.testing import RunningSimulator

MODEL = "meta-llama/Llama-3.3-70B-Instruct-Turbo"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}
CHATS = 12  # each on a connection of its own, so both workers answer some


@pytest.fixture(scope="module")
def server(simulator: RunningSimulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    """The server after CHATS chat requests and one 402, every log recorded."""
    # Services of its own, whatever this run uses: a shared database would hold keys of earlier runs.
    database = tmp_path_factory.mktemp("metrics-server") / "db.sqlite3"
    own = {"DATABASE_URL": f"sqlite:///{database}", "CACHE_URL": "locmemcache://",
           "CELERY_BROKER_URL": "filesystem://"}
    with Dashboard(upstream=simulator.base_url, env=own, workers=2) as dashboard:
        key = dashboard.create_app_key("metrics-tests")
        for _ in range(CHATS):
            assert chat(dashboard, key).status_code == 200
        wait_until(lambda: account_requests(dashboard) == CHATS, timeout=30, message="the logs recorded")
        # After the successes are recorded, or a later batch of them would resolve the billing alert.
        assert chat(dashboard, key, **{"X-Simulate": "402"}).status_code == 402
        wait_until(lambda: billing_exhausted(dashboard) == 1, timeout=30, message="the billing alert")
        yield dashboard


def chat(dashboard: Dashboard, key: str, **headers: str) -> httpx.Response:
    return httpx.post(f"{dashboard.base_url}/chat/completions", json=CHAT, timeout=30,
                      headers={"Authorization": f"Bearer {key}", **headers})


def scrape(dashboard: Dashboard) -> Exposition:
    return Exposition(dashboard.metrics())


def account_requests(dashboard: Dashboard) -> float:
    return scrape(dashboard).total("together_dash_requests_total")


def billing_exhausted(dashboard: Dashboard) -> float | None:
    return scrape(dashboard).value("together_dash_billing_exhausted", upstream_key="demo")


def test_every_scrape_of_either_worker_counts_the_requests_of_both(server: Dashboard) -> None:
    chat_ok = {"endpoint": "chat/completions", "status_class": "2xx"}
    for _ in range(8):  # each scrape is answered by whichever worker takes the connection
        exposition = scrape(server)
        assert exposition.value("together_dash_proxy_requests_total", **chat_ok) == CHATS
        assert exposition.total("together_dash_requests_total") == CHATS + 1
        assert exposition.value("together_dash_errors_total", category="billing", kind="insufficient_credits",
                                model=MODEL, upstream_key="demo") == 1
    folder = Path(server.var_dir, "prometheus")
    writers = {path.stem.rsplit("_", 1)[1] for path in folder.glob("counter_*.db")}
    assert len(writers) >= 2  # the two workers (and nothing else of the test's) write here


def test_the_server_refuses_anonymous_and_wrong_token_scrapes(server: Dashboard) -> None:
    anonymous = httpx.get(f"{server.root_url}/metrics", timeout=10)
    wrong = httpx.get(f"{server.root_url}/metrics", headers={"Authorization": "Bearer nope"}, timeout=10)

    assert (anonymous.status_code, wrong.status_code) == (401, 401)
    assert server.metrics_token not in anonymous.text + wrong.text


def test_a_real_prometheus_scrapes_it_with_the_token(server: Dashboard, tmp_path: Path) -> None:
    target = {"targets": [server.root_url.removeprefix("http://")]}
    jobs = [
        {"job_name": "together-dash", "metrics_path": "/metrics", "static_configs": [target],
         "authorization": {"type": "Bearer", "credentials": server.metrics_token}},
        {"job_name": "wrong-token", "metrics_path": "/metrics", "static_configs": [target],
         "authorization": {"type": "Bearer", "credentials": "not-the-token"}},
    ]
    with running_prometheus(tmp_path, jobs) as prometheus:
        def scraped() -> bool:
            targets = prometheus.targets()
            jobs = ("together-dash", "wrong-token")
            return all(job in targets and targets[job]["health"] != "unknown" for job in jobs)

        wait_until(scraped, timeout=30, message="both targets scraped")
        targets = prometheus.targets()
        assert targets["together-dash"]["health"] == "up", targets["together-dash"]["lastError"]
        assert targets["wrong-token"]["health"] == "down"
        assert "401" in targets["wrong-token"]["lastError"]

        wait_until(lambda: prometheus.value('together_dash_account_up{job="together-dash"}') is not None,
                   timeout=30, message="the first samples")
        assert prometheus.value('sum(together_dash_requests_total{job="together-dash"})') == CHATS + 1
        assert prometheus.value(
            'together_dash_proxy_requests_total{job="together-dash",endpoint="chat/completions",'
            'status_class="2xx"}') == CHATS
        billing = 'together_dash_billing_exhausted{job="together-dash",upstream_key="demo"}'
        assert prometheus.value(billing) == 1
        assert prometheus.value('up{job="wrong-token"}') == 0
