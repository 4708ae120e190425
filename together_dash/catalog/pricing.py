"""Cost of one request from the polled catalog prices, cheap enough for the ingest and proxy path.

The price table lives in process memory and is reloaded from the database at most every
PRICE_TABLE_TTL seconds, so a price change reaches every process within a minute and a request
costs one dict look-up. cost_usd() is synchronous (it may hit the database on reload); async code
calls it from the thread that writes request logs.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from decimal import Decimal

from django.db import DatabaseError

from together_dash.catalog.models import ModelInfo

PRICE_TABLE_TTL = 60.0
RETRY_AFTER_ERROR = 5.0
PER_TOKENS = Decimal(1_000_000)
# RequestLog.cost_usd has 8 decimal places.
QUANTUM = Decimal("0.00000001")
ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Price:
    """USD per 1M tokens; None when Together did not say."""

    input: Decimal | None
    output: Decimal | None


class _PriceTable:
    def __init__(self) -> None:
        self._prices: dict[str, Price] = {}
        self._loaded_at = float("-inf")
        self._loaded = False
        self._lock = threading.Lock()

    def get(self, model: str) -> Price | None:
        if time.monotonic() - self._loaded_at > PRICE_TABLE_TTL:
            self._reload()
        return self._prices.get(model)

    def invalidate(self) -> None:
        self._loaded_at = float("-inf")

    def _reload(self) -> None:
        # One thread reloads; the others keep answering from the previous table meanwhile (except
        # before the first load, when there is nothing to answer from).
        if not self._lock.acquire(blocking=not self._loaded):
            return
        try:
            if time.monotonic() - self._loaded_at <= PRICE_TABLE_TTL:
                return  # another thread reloaded while this one waited
            rows = ModelInfo.objects.values_list("model_id", "pricing_input", "pricing_output")
            self._prices = {model_id: Price(inp, out) for model_id, inp, out in rows}
            self._loaded = True
            self._loaded_at = time.monotonic()
        except DatabaseError:
            # Costing a request must not fail it: keep the old table and try again shortly.
            self._loaded_at = time.monotonic() - PRICE_TABLE_TTL + RETRY_AFTER_ERROR
        finally:
            self._lock.release()


_table = _PriceTable()


def price_for(model: str) -> Price | None:
    """The catalog price of a model id (exact match), or None when the catalog does not know it."""
    return _table.get(model)


def invalidate_prices() -> None:
    """Reload the table on the next look-up (the catalog poller calls this after a change)."""
    _table.invalidate()


def cost_usd(model: str, prompt_tokens: int | None, completion_tokens: int | None) -> Decimal | None:
    """Cost of a request in USD, or None when the model is unpriced or a priced token count is unknown."""
    price = price_for(model) if model else None
    if price is None:
        return None
    prompt = _part(prompt_tokens, price.input)
    completion = _part(completion_tokens, price.output)
    if prompt is None or completion is None:
        return None
    return ((prompt + completion) / PER_TOKENS).quantize(QUANTUM)


def _part(tokens: int | None, per_million: Decimal | None) -> Decimal | None:
    """tokens x price; an unknown count only matters when its price is not zero (embeddings: no output)."""
    if tokens is not None and tokens < 0:
        return None
    if per_million is not None and per_million == ZERO:
        return ZERO
    if tokens is None or per_million is None:
        return ZERO if tokens == 0 else None
    return per_million * tokens
