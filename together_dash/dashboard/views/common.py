"""What every dashboard page shares: the parsed range, the filter choices, and number formatting."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.http import HttpRequest
from django.urls import reverse

from together_dash.dashboard import queries
from together_dash.dashboard.palette import CATEGORY_COLORS, CATEGORY_LABELS
from together_dash.dashboard.ranges import PRESET_LABELS, Range, parse_range

CHART_NAMES: tuple[str, ...] = ("categories", "volume", "quota", "finetunes")
REFRESH_SECONDS = 30


def range_of(request: HttpRequest) -> Range:
    return parse_range(request.GET)


def filter_context(rng: Range) -> dict[str, Any]:
    """The range picker and the key and model filters, as every filtered page shows them."""
    return {
        "rng": rng,
        "presets": PRESET_LABELS,
        "filter_keys": queries.keys_for_filter(),
        "filter_models": queries.model_ids(),
        "categories": CATEGORY_LABELS,
    }


def script_config() -> dict[str, Any]:
    """What static/dashboard.js needs from the server, handed over with json_script."""
    return {
        "charts": {name: reverse(f"dashboard-chart-{name}") for name in CHART_NAMES},
        "categoryColors": CATEGORY_COLORS,
        "refreshSeconds": REFRESH_SECONDS,
        "timeZone": settings.TIME_ZONE,
    }


def proxy_base_url(request: HttpRequest) -> str:
    return request.build_absolute_uri("/v1")


@dataclass(frozen=True, slots=True)
class FigureCard:
    """One headline number with the previous period's, and how it moved."""

    name: str
    label: str
    value: str
    previous: str
    change: str
    tone: str  # good, bad or neutral: what the change means for on-call
    # The unpriced state of a cost: how many requests it leaves out because their model has no price.
    unpriced: int = 0


def figure_cards(comparison: queries.Comparison) -> list[FigureCard]:
    now, before = comparison.current, comparison.previous
    return [
        FigureCard(
            "requests",
            "Requests",
            count(now.requests),
            count(before.requests),
            relative_change(now.requests, before.requests),
            "neutral",
        ),
        _error_rate_card(now.error_rate, before.error_rate),
        FigureCard(
            "tokens",
            "Tokens",
            compact(now.total_tokens),
            compact(before.total_tokens),
            relative_change(now.total_tokens, before.total_tokens),
            "neutral",
        ),
        FigureCard(
            "cost",
            "Cost",
            money(now.cost_usd),
            money(before.cost_usd),
            relative_change(now.cost_usd, before.cost_usd),
            "neutral",
            unpriced=now.unpriced_requests,
        ),
    ]


def _error_rate_card(now: float | None, before: float | None) -> FigureCard:
    if now is None or before is None:
        change, tone = "", "neutral"
    else:
        points = (now - before) * 100
        change = "no change" if abs(points) < 0.05 else f"{points:+.1f} pp"
        tone = "bad" if points >= 0.05 else "good" if points <= -0.05 else "neutral"
    return FigureCard("error_rate", "Error rate", percent(now), percent(before), change, tone)


def count(value: int) -> str:
    return f"{value:,}"


def compact(value: int) -> str:
    """1234567 -> 1.2M: big token counts read at a glance."""
    for size, suffix in ((1_000_000_000, "B"), (1_000_000, "M"), (1_000, "k")):
        if abs(value) >= size:
            return f"{value / size:.1f}{suffix}"
    return str(value)


def money(value: Decimal) -> str:
    if 0 < value < Decimal("0.01"):
        return "< $0.01"
    return f"${value:,.2f}"


def percent(rate: float | None) -> str:
    return "–" if rate is None else f"{rate * 100:.1f}%"


def relative_change(now: int | Decimal, before: int | Decimal) -> str:
    if not before:
        return "new" if now else "no change"
    ratio = (Decimal(now) - Decimal(before)) / Decimal(before) * 100
    return "no change" if abs(ratio) < Decimal("0.5") else f"{ratio:+.0f}%"
