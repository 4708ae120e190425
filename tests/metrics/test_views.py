"""/metrics: off without METRICS_TOKEN, 401 without the right bearer token, Prometheus text with it."""
from __future__ import annotations

import pytest
from django.test import Client

from tests.metrics.conftest import TOKEN, scrape

pytestmark = pytest.mark.django_db


def test_it_is_off_with_a_404_while_metrics_token_is_unset(client: Client, settings: object) -> None:
    settings.METRICS_TOKEN = ""

    response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer anything")

    assert response.status_code == 404
    assert b"set METRICS_TOKEN" in response.content


def test_an_anonymous_scrape_gets_a_401_that_asks_for_a_bearer_token(
    client: Client, metrics_token: str
) -> None:
    response = client.get("/metrics")

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert b"together_dash" not in response.content


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer wrong-token",
        f"Bearer {TOKEN}x",  # longer
        f"Bearer {TOKEN[:-1]}",  # a prefix
        f"Basic {TOKEN}",  # the right secret in the wrong scheme
        f"{TOKEN}",
        "Bearer ",
        "Bearer \u00e9t\u00e9",  # not ASCII
    ],
)
def test_a_wrong_token_gets_a_401(client: Client, metrics_token: str, authorization: str) -> None:
    response = client.get("/metrics", HTTP_AUTHORIZATION=authorization)

    assert response.status_code == 401


def test_the_token_opens_it_and_it_parses_back_as_prometheus_text(client: Client, metrics_token: str) -> None:
    exposition = scrape(client)

    assert exposition.types["together_dash_proxy_requests"] == "counter"
    assert exposition.types["together_dash_proxy_upstream_latency_seconds"] == "histogram"
    assert exposition.types["together_dash_requests"] == "counter"
    assert exposition.types["together_dash_ratelimit_remaining_ratio"] == "gauge"
    assert exposition.value("together_dash_account_up") == 1


def test_series_picks_the_processes_or_the_account_alone(client: Client, metrics_token: str) -> None:
    processes = scrape(client, ["proxy"])
    account = scrape(client, ["account"])

    assert "together_dash_proxy_logs_dropped" in processes.types
    assert "together_dash_finetune_jobs" not in processes.types
    assert "together_dash_finetune_jobs" in account.types
    assert "together_dash_proxy_logs_dropped" not in account.types
    response = client.get("/metrics?series=everything", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 400


def test_the_token_appears_in_no_answer(client: Client, metrics_token: str) -> None:
    answers = [
        client.get("/metrics"),
        client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong"),
        client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}"),
        client.get("/metrics?series=bad", HTTP_AUTHORIZATION=f"Bearer {TOKEN}"),
    ]

    for response in answers:
        assert TOKEN.encode() not in response.content
        assert all(TOKEN not in value for value in response.headers.values())


def test_a_scrape_is_a_get_and_never_cached(client: Client, metrics_token: str) -> None:
    assert client.post("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 405
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert "no-cache" in response["Cache-Control"]
