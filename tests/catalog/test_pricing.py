"""cost_usd: catalog prices per 1M tokens, cached in process, None when it cannot know."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest

from together_dash.catalog import pricing
from together_dash.catalog.models import ModelInfo
from together_dash.catalog.pricing import PRICE_TABLE_TTL, cost_usd, invalidate_prices

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_table() -> Iterator[None]:
    invalidate_prices()
    yield
    invalidate_prices()


@pytest.fixture
def priced() -> None:
    ModelInfo.objects.create(
        model_id="org/chat", pricing_input=Decimal("0.88"), pricing_output=Decimal("2.5")
    )
    ModelInfo.objects.create(model_id="org/embed", pricing_input=Decimal("0.02"), pricing_output=Decimal("0"))
    ModelInfo.objects.create(model_id="org/unpriced")


def test_it_prices_prompt_and_completion_per_million_tokens(priced: None) -> None:
    # 1000 x 0.88 / 1M + 200 x 2.5 / 1M = 0.00088 + 0.0005
    assert cost_usd("org/chat", 1000, 200) == Decimal("0.00138000")


def test_it_is_none_when_unpriced_unknown_or_tokens_unknown(priced: None) -> None:
    assert cost_usd("org/unpriced", 10, 10) is None
    assert cost_usd("org/not-in-catalog", 10, 10) is None
    assert cost_usd("org/chat", None, 10) is None
    assert cost_usd("org/chat", 10, None) is None
    assert cost_usd("", 10, 10) is None


def test_an_unknown_count_at_a_zero_price_still_prices(priced: None) -> None:
    assert cost_usd("org/embed", 1_000_000, None) == Decimal("0.02000000")


def test_model_ids_match_exactly(priced: None) -> None:
    assert cost_usd("ORG/CHAT", 10, 10) is None


def test_prices_are_cached_then_reloaded(
    priced: None, django_assert_num_queries: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The table's age is read from time.monotonic, which time-machine leaves alone: a clock of our own.
    now = [1000.0]
    monkeypatch.setattr(pricing.time, "monotonic", lambda: now[0])
    cost_usd("org/chat", 1, 1)
    ModelInfo.objects.filter(model_id="org/chat").update(pricing_input=Decimal("100"))
    with django_assert_num_queries(0):
        assert cost_usd("org/chat", 1_000_000, 0) == Decimal("0.88000000")
    now[0] += PRICE_TABLE_TTL + 1
    assert cost_usd("org/chat", 1_000_000, 0) == Decimal("100.00000000")
