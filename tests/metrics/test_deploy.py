"""deploy/: the Grafana board and the alert rules use only series /metrics has; promtool accepts them."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from django.conf import settings
from django.test import Client

from tests.metrics._prometheus import PROMTOOL, require
from tests.metrics.conftest import Exposition, scrape
from together_dash.jobs.models import BatchJob, FineTuneJob
from together_dash.keys.models import RateLimitSnapshot, TogetherKey
from together_dash.pollers.models import PollerHeartbeat
from together_dash.proxy import metrics
from together_dash.traffic.entries import LogEntry
from together_dash.traffic.recording import record_entries

DEPLOY = Path(settings.BASE_DIR) / "deploy"
BOARD = DEPLOY / "grafana" / "together-dash.json"
PROMETHEUS = DEPLOY / "prometheus"
SERIES_NAME = re.compile(r"\btogether_dash_[a-z0-9_]+")


@pytest.fixture
def everything(db: None, client: Client, metrics_token: str) -> Exposition:
    """A scrape in which every series has a sample: traffic, an error, a snapshot, jobs, a poller, streams."""
    key = TogetherKey.create("prod-main", "tgp_" + "x" * 40)
    now = datetime.now(UTC)
    entry = {"created_at": now, "endpoint": "/v1/chat/completions", "upstream_key_id": key.id,
             "model_requested": "m", "status_code": 200, "prompt_tokens": 3, "completion_tokens": 2}
    record_entries([LogEntry(**entry), LogEntry(**{**entry, "status_code": 503, "category": "server",
                                                 "kind": "service_unavailable"})])
    RateLimitSnapshot.objects.create(key=key, model="m", taken_at=now, source="proxy", headroom_pct=50)
    FineTuneJob.objects.create(job_id="ft-1", status="running")
    BatchJob.objects.create(batch_id="batch-1", status="COMPLETED")
    PollerHeartbeat.objects.create(name="poll_models", interval_seconds=300, last_success=now)
    metrics.count_request("chat/completions", 200)
    metrics.observe_upstream_latency("chat/completions", 0.3)
    metrics.observe_time_to_first_token("chat/completions", 0.4)
    return scrape(client)


def board_queries() -> Iterator[str]:
    board = json.loads(BOARD.read_text())
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            yield target["expr"]
    for variable in board["templating"]["list"]:
        if isinstance(variable.get("query"), dict):
            yield variable["query"]["query"]


def rule_queries() -> Iterator[str]:
    for group in yaml.safe_load((PROMETHEUS / "together-dash.rules.yml").read_text())["groups"]:
        for rule in group["rules"]:
            yield rule["expr"]


@pytest.mark.parametrize("queries", [board_queries, rule_queries], ids=["grafana board", "alert rules"])
def test_every_series_a_query_names_is_in_the_exposition(everything: Exposition, queries: object) -> None:
    named = {name for query in queries() for name in SERIES_NAME.findall(query)}  # type: ignore[operator]
    missing = named - set(everything.samples)

    assert named and missing == set()


def test_the_board_charts_every_kind_of_series(everything: Exposition) -> None:
    charted = {name for query in board_queries() for name in SERIES_NAME.findall(query)}
    families = {name.removesuffix("_bucket").removesuffix("_total") for name in charted}

    exposed = {name.removesuffix("_bucket").removesuffix("_total").removesuffix("_sum").removesuffix("_count")
               for name in everything.samples if name.startswith("together_dash_")}
    left_out = exposed - families - {"together_dash_account_collect_seconds"}
    assert left_out == set()


def test_the_board_reads_its_prometheus_from_a_variable() -> None:
    board = json.loads(BOARD.read_text())
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    panels = [panel for panel in board["panels"] if panel["type"] != "row"]

    assert variables["datasource"]["type"] == "datasource"
    assert board["__inputs"][0]["name"] == "DS_PROMETHEUS"
    assert all(panel["datasource"]["uid"] == "${datasource}" for panel in panels)
    assert len({panel["id"] for panel in board["panels"]}) == len(board["panels"])


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    require(PROMTOOL)
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_promtool_accepts_the_rules_and_their_unit_tests_pass() -> None:
    checked = promtool("check", "rules", "together-dash.rules.yml", cwd=PROMETHEUS)
    tested = promtool("test", "rules", "together-dash.rules.test.yml", cwd=PROMETHEUS)

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_promtool_accepts_the_example_configuration(tmp_path: Path) -> None:
    token = tmp_path / "together-dash.token"
    token.write_text("a-metrics-token\n")
    config, example_token = (PROMETHEUS / "prometheus.yml").read_text(), "/etc/prometheus/together-dash.token"
    assert example_token in config
    (tmp_path / "prometheus.yml").write_text(config.replace(example_token, str(token)))
    shutil.copy(PROMETHEUS / "together-dash.rules.yml", tmp_path)

    checked = promtool("check", "config", "prometheus.yml", cwd=tmp_path)

    assert checked.returncode == 0, checked.stdout + checked.stderr
