"""Cost of one request from the polled catalog's prices, read at write time and cheap enough for the
ingest and proxy path.

Each process keeps the catalog's prices in memory and, once per batch of requests (prices()), reads the
catalog's generation (CatalogVersion: one row, changed by every catalog poll or model write that changed
something) to know whether its copy is stale: one small read per batch, then a dict look-up per request.
So prices the worker has just polled price the web process's very next batch. (They used to be reloaded
on a timer, and every request of the first minute after start was priced "unknown".) cost_usd() is
synchronous (it reads the database); async code calls it from the thread that writes request logs.

Prompt tokens served from the cache (usage.cached_tokens, part of prompt_tokens) cost the catalog's
cached-input price where it has one; the rest of the prompt costs the input price.

A request addressed to one of our dedicated endpoints (its `model` is the endpoint's name, as listed by
poll_endpoints) costs nothing per token: Together bills the endpoint by the minute while it runs,
whatever it serves (the endpoints page shows that cost). Its tokens are still counted. The endpoint
poller bumps the catalog generation when the names change, so every process learns them on its next batch.
"""
from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from django.db import DatabaseError

from together_dash.catalog.models import CatalogVersion, ModelInfo
from together_dash.endpoints.models import Endpoint

PER_TOKENS = Decimal(1_000_000)
# RequestLog.cost_usd has 8 decimal places.
QUANTUM = Decimal("0.00000001")
ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Price:
    """USD per 1M tokens; None when Together did not say."""

    input: Decimal | None
    output: Decimal | None
    cached_input: Decimal | None = None


@dataclass(frozen=True, slots=True)
class PriceTable:
    """The catalog's prices as of one generation."""

    generation: str | None
    prices: Mapping[str, Price] = field(default_factory=dict)
    # Names of dedicated endpoints: billed per minute, so no per-token cost.
    per_minute: frozenset[str] = frozenset()

    def get(self, model: str) -> Price | None:
        """The price of a model id (exact match), or None when the catalog does not know it."""
        return self.prices.get(model)

    def cost(
        self,
        model: str,
        prompt_tokens: int | None,
        completion_tokens: int | None,
        cached_tokens: int | None = None,
    ) -> Decimal | None:
        """Cost of a request in USD, or None when the model is unpriced or a priced token count is unknown."""
        price = self.get(model) if model else None
        return request_cost(price, prompt_tokens, completion_tokens, cached_tokens)

    def cost_of_request(
        self,
        requested: str,
        served: str,
        prompt_tokens: int | None,
        completion_tokens: int | None,
        cached_tokens: int | None = None,
    ) -> Decimal | None:
        """What one request adds to the bill: nothing per token on a dedicated endpoint (it bills by the
        minute), else the served model's price (the requested one's when nothing was served)."""
        if requested and requested in self.per_minute:
            return ZERO
        return self.cost(served or requested, prompt_tokens, completion_tokens, cached_tokens)


class _ProcessPrices:
    """This process's copy of the price table, reloaded when the catalog's generation moves."""

    def __init__(self) -> None:
        self._table = PriceTable(None)
        self._lock = threading.Lock()

    def current(self) -> PriceTable:
        try:
            generation = CatalogVersion.current()
        except DatabaseError:
            return self._table  # costing a request must not fail it: the last table it is
        if generation != self._table.generation:
            self._reload(generation)
        return self._table

    def invalidate(self) -> None:
        self._table = PriceTable(None, self._table.prices, self._table.per_minute)

    def _reload(self, generation: str) -> None:
        with self._lock:
            if self._table.generation == generation:
                return  # another thread reloaded while this one waited
            try:
                rows = ModelInfo.objects.values_list(
                    "model_id", "pricing_input", "pricing_output", "pricing_cached_input"
                )
                prices = {model_id: Price(inp, out, cached) for model_id, inp, out, cached in rows}
                per_minute = frozenset(Endpoint.objects.values_list("name", flat=True))
            except DatabaseError:
                return
            self._table = PriceTable(generation, prices, per_minute)


_process = _ProcessPrices()


def prices() -> PriceTable:
    """The catalog's current prices: one small read, and a reload only when the catalog changed."""
    return _process.current()


def price_for(model: str) -> Price | None:
    """The catalog price of a model id (exact match), or None when the catalog does not know it."""
    return prices().get(model)


def invalidate_prices() -> None:
    """Reload on the next look-up, whatever the generation says (tests that write prices directly)."""
    _process.invalidate()


def cost_usd(
    model: str, prompt_tokens: int | None, completion_tokens: int | None, cached_tokens: int | None = None
) -> Decimal | None:
    """Cost of one request in USD from the current prices (a batch asks prices() once instead)."""
    return prices().cost(model, prompt_tokens, completion_tokens, cached_tokens)


def request_cost(
    price: Price | None,
    prompt_tokens: int | None,
    completion_tokens: int | None,
    cached_tokens: int | None = None,
) -> Decimal | None:
    """tokens x prices / 1M, exact to 8 places; None when a count that has a price is unknown."""
    if price is None:
        return None
    prompt = _prompt_part(price, prompt_tokens, cached_tokens)
    completion = _part(completion_tokens, price.output)
    if prompt is None or completion is None:
        return None
    return ((prompt + completion) / PER_TOKENS).quantize(QUANTUM)


def _prompt_part(price: Price, prompt_tokens: int | None, cached_tokens: int | None) -> Decimal | None:
    """The prompt at the input price, except its cached tokens at the cached-input price (when known)."""
    cached = cached_tokens or 0
    if price.cached_input is None or cached <= 0 or prompt_tokens is None or prompt_tokens < 0:
        return _part(prompt_tokens, price.input)
    cached = min(cached, prompt_tokens)
    fresh = _part(prompt_tokens - cached, price.input)
    return None if fresh is None else fresh + price.cached_input * cached


def _part(tokens: int | None, per_million: Decimal | None) -> Decimal | None:
    """tokens x price; an unknown count only matters when its price is not zero (embeddings: no output)."""
    if tokens is not None and tokens < 0:
        return None
    if per_million is not None and per_million == ZERO:
        return ZERO
    if tokens is None or per_million is None:
        return ZERO if tokens == 0 else None
    return per_million * tokens
