"""Scraping /metrics in tests: the token, and the exposition parsed back with prometheus_client's parser."""
from __future__ import annotations

from collections.abc import Iterable

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

TOKEN = "test-metrics-token-4f1c9e2b7a"


class Exposition:
    """A scrape's text, parsed: every sample by name and labels, and the families' names and types."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.types: dict[str, str] = {}
        self.samples: dict[str, list[tuple[dict[str, str], float]]] = {}
        for family in text_string_to_metric_families(text):
            self.types[family.name] = family.type
            for sample in family.samples:
                self.samples.setdefault(sample.name, []).append((sample.labels, sample.value))

    def value(self, name: str, **labels: str) -> float | None:
        """The sample with exactly these labels, or None."""
        for found, value in self.samples.get(name, []):
            if found == labels:
                return value
        return None

    def total(self, name: str, **labels: str) -> float:
        """The sum of the samples whose labels include these."""
        return sum(value for found, value in self.samples.get(name, []) if labels.items() <= found.items())

    def label_values(self, name: str, label: str) -> set[str]:
        return {found[label] for found, _ in self.samples.get(name, []) if label in found}


@pytest.fixture
def metrics_token(settings: object) -> str:
    settings.METRICS_TOKEN = TOKEN
    return TOKEN


def scrape(client: Client, series: Iterable[str] = ()) -> Exposition:
    """GET /metrics with the token, asserting a 200 in Prometheus' text format."""
    query = "&".join(f"series={name}" for name in series)
    response = client.get(f"/metrics?{query}" if query else "/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    return Exposition(response.content.decode())
