from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.urls import get_resolver, reverse

from together_dash.dashboard.palette import CATEGORY_COLORS
from together_dash.dashboard.views.common import CHART_NAMES

from .conftest import LLAMA, QWEN, Seed

pytestmark = pytest.mark.django_db

CHART_URLS = [reverse(f"dashboard-chart-{name}") for name in CHART_NAMES]


def chart_route_names() -> list[str]:
    return [
        name
        for name in get_resolver().reverse_dict
        if isinstance(name, str) and name.startswith("dashboard-chart-")
    ]


def test_every_chart_endpoint_needs_no_arguments_so_the_benchmark_can_time_it() -> None:
    names = chart_route_names()
    assert sorted(names) == sorted(f"dashboard-chart-{name}" for name in CHART_NAMES)
    for name in names:
        assert reverse(name).endswith(".json")


@pytest.mark.parametrize("url", CHART_URLS)
def test_a_chart_endpoint_answers_401_json_without_a_session(client: Client, url: str) -> None:
    response = client.get(url)
    assert response.status_code == 401 and "detail" in response.json()


@pytest.mark.parametrize("url", CHART_URLS)
def test_a_chart_endpoint_answers_403_json_without_a_role(nobody_web: Client, url: str) -> None:
    response = nobody_web.get(url)
    assert response.status_code == 403 and "detail" in response.json()


@pytest.mark.parametrize("url", CHART_URLS)
def test_a_chart_endpoint_is_not_cached_and_echoes_the_range(viewer_web: Client, url: str) -> None:
    response = viewer_web.get(url, {"range": "7d", "model": LLAMA})
    assert response.status_code == 200
    assert "no-cache" in response["Cache-Control"] or "max-age=0" in response["Cache-Control"]
    assert response.json()["range"] == {"range": "7d", "model": LLAMA}


@pytest.mark.parametrize("url", CHART_URLS)
def test_a_chart_endpoint_refuses_an_unusable_range(viewer_web: Client, url: str) -> None:
    response = viewer_web.get(url, {"range": "custom", "start": "garbage"})
    assert response.status_code == 400 and "start time" in response.json()["detail"]


@pytest.fixture
def errors(seed: Seed) -> Seed:
    prod, batch = seed.key("prod"), seed.key("batch")
    seed.logs(prod, LLAMA, timedelta(minutes=10), 5)
    seed.logs(prod, LLAMA, timedelta(minutes=10), 3, kind="request_rate_limited")
    seed.logs(prod, LLAMA, timedelta(minutes=40), 2, kind="insufficient_credits")
    seed.logs(batch, QWEN, timedelta(minutes=20), 4, kind="model_not_found")
    seed.logs(batch, QWEN, timedelta(hours=5), 6, kind="model_overloaded")
    seed.prod, seed.batch = prod, batch
    return seed


def test_categories_count_each_category_with_its_fixed_colour(viewer_web: Client, errors: Seed) -> None:
    body = viewer_web.get(reverse("dashboard-chart-categories")).json()

    assert body["totals"] == {
        "auth": 0,
        "billing": 2,
        "rate_limit": 3,
        "validation": 4,
        "not_found": 0,
        "server": 6,
        "network": 0,
    }
    assert body["total"] == 15
    assert [d["category"] for d in body["datasets"]] == list(CATEGORY_COLORS)
    assert all(d["color"] == CATEGORY_COLORS[d["category"]] for d in body["datasets"])
    assert all(len(d["data"]) == len(body["buckets"]) for d in body["datasets"])
    assert (body["step"], body["bucketSeconds"]) == ("hour", 3600)


def test_categories_follow_the_range_key_and_model_filters(viewer_web: Client, errors: Seed) -> None:
    url = reverse("dashboard-chart-categories")
    last_hour = viewer_web.get(url, {"range": "1h"}).json()
    one_key = viewer_web.get(url, {"key": errors.prod.id}).json()
    one_model = viewer_web.get(url, {"model": QWEN}).json()

    assert (last_hour["total"], last_hour["step"], len(last_hour["buckets"])) == (9, "minute", 61)
    assert one_key["totals"]["validation"] == 0 and one_key["total"] == 5
    assert (one_model["totals"]["validation"], one_model["totals"]["server"], one_model["total"]) == (
        4,
        6,
        10,
    )


def test_volume_has_requests_and_errors_per_bucket(viewer_web: Client, errors: Seed) -> None:
    body = viewer_web.get(reverse("dashboard-chart-volume"), {"range": "1h"}).json()
    requests, errors_line = (
        next(d["data"] for d in body["datasets"] if d["name"] == name) for name in ("requests", "errors")
    )
    assert (sum(requests), sum(errors_line), body["total"]) == (14, 9, 14)


def test_quota_has_the_tightest_bars_first_a_trend_and_warnings(viewer_web: Client, errors: Seed) -> None:
    errors.snapshot(errors.prod, "", 70.0, timedelta(minutes=2))
    errors.snapshot(errors.prod, LLAMA, 9.0, timedelta(minutes=3))
    errors.snapshot(errors.batch, "", 2.0, timedelta(minutes=4))

    body = viewer_web.get(reverse("dashboard-chart-quota"), {"range": "1h"}).json()

    assert [(bar["label"], bar["headroomPct"], bar["level"]) for bar in body["bars"]] == [
        ("batch · all models", 2.0, "critical"),
        (f"prod · {LLAMA}", 9.0, "low"),
        ("prod · all models", 70.0, "ok"),
    ]
    assert [d["label"] for d in body["trend"]["datasets"]] == [bar["shortLabel"] for bar in body["bars"]]
    assert body["bars"][1]["shortLabel"] == "prod · Llama-3.3-70B-Instruct-Turbo"
    assert [v for v in body["trend"]["datasets"][0]["data"] if v is not None] == [2.0]
    assert body["warnings"] == [
        "batch · all models: 2% of the rate limit left (critical).",
        f"prod · {LLAMA}: 9% of the rate limit left (low).",
    ]


def test_quota_filtered_by_model_keeps_key_level_limits(viewer_web: Client, errors: Seed) -> None:
    errors.snapshot(errors.prod, "", 70.0, timedelta(minutes=2))
    errors.snapshot(errors.prod, LLAMA, 9.0, timedelta(minutes=3))
    errors.snapshot(errors.prod, QWEN, 50.0, timedelta(minutes=3))
    body = viewer_web.get(reverse("dashboard-chart-quota"), {"model": LLAMA}).json()
    assert [bar["model"] for bar in body["bars"]] == [LLAMA, ""]


def test_quota_without_snapshots_is_empty_not_an_error(viewer_web: Client) -> None:
    body = viewer_web.get(reverse("dashboard-chart-quota")).json()
    assert (body["bars"], body["warnings"], body["trend"]["datasets"]) == ([], [], [])


def test_finetunes_count_jobs_by_status(viewer_web: Client, seed: Seed) -> None:
    seed.finetune("ft-1", "running", (1, 4))
    seed.finetune("ft-2", "running", (2, 4))
    seed.finetune("ft-3", "queued", None)
    seed.finetune("ft-4", "error", (1, 4))
    body = viewer_web.get(reverse("dashboard-chart-finetunes")).json()
    assert (body["statuses"], body["counts"], body["total"]) == (["queued", "running", "error"], [1, 2, 1], 4)
    assert body["colors"][2] == "#b91c1c"
