"""cost_usd: catalog prices per 1M tokens (cached prompt tokens at the cached-input price), read from a
per-process table that follows the catalog's generation, None when it cannot know."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest

from together_dash.catalog.models import CatalogVersion, ModelInfo
from together_dash.catalog.pricing import Price, cost_usd, invalidate_prices, prices, request_cost

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
    ModelInfo.objects.create(
        model_id="org/cached", pricing_input=Decimal("1.25"), pricing_output=Decimal("1.25"),
        pricing_cached_input=Decimal("0.5"),
    )
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


def test_cached_prompt_tokens_cost_the_cached_input_price(priced: None) -> None:
    # 600 fresh x 1.25 + 400 cached x 0.5 + 100 x 1.25, per 1M
    assert cost_usd("org/cached", 1000, 100, cached_tokens=400) == Decimal("0.00107500")
    assert cost_usd("org/cached", 1000, 100, cached_tokens=0) == cost_usd("org/cached", 1000, 100)
    assert cost_usd("org/cached", 1000, 100, cached_tokens=None) == Decimal("0.00137500")


def test_without_a_cached_price_cached_tokens_cost_the_input_price(priced: None) -> None:
    assert cost_usd("org/chat", 1000, 200, cached_tokens=400) == cost_usd("org/chat", 1000, 200)


def test_cached_tokens_never_count_for_more_than_the_prompt() -> None:
    price = Price(Decimal("1"), Decimal("1"), Decimal("0.1"))
    assert request_cost(price, 100, 0, cached_tokens=500) == Decimal("0.00001000")


def test_prices_are_kept_until_the_catalog_generation_moves(
    priced: None, django_assert_num_queries: object
) -> None:
    cost_usd("org/chat", 1, 1)
    # A write that goes around the models' save() (and so around the generation) is not seen...
    ModelInfo.objects.filter(model_id="org/chat").update(pricing_input=Decimal("100"))
    with django_assert_num_queries(1):  # the generation, and no reload
        assert cost_usd("org/chat", 1_000_000, 0) == Decimal("0.88000000")
    # ...until the catalog says it changed, as the poller does after every change.
    CatalogVersion.bump()
    assert cost_usd("org/chat", 1_000_000, 0) == Decimal("100.00000000")


def test_any_save_of_a_model_moves_the_generation(priced: None) -> None:
    before = prices().generation
    ModelInfo.objects.create(model_id="org/new", pricing_input=Decimal("1"), pricing_output=Decimal("1"))

    assert prices().generation != before
    assert cost_usd("org/new", 1_000_000, 0) == Decimal("1.00000000")
