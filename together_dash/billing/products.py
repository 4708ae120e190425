"""What a billing line item charges for, read from its product name, pricing dimensions and attributes.

Its model is `pricing_dimensions.model` (else `attributes.model`), the catalog's model id; its token type
is the end of its product name ("Serverless Inference - Input Tokens", "... - Cached Input Tokens",
"... - Output Tokens"). Dedicated endpoint minutes, fine-tuning and batch jobs (and a line that names no
model) are charges of their own, with no request log behind them.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

# Product name prefixes (case-insensitive) of charges that no request log stands for.
NOT_PER_REQUEST: tuple[tuple[str, str], ...] = (
    ("dedicated", "dedicated endpoint"),
    ("fine-tun", "fine-tuning"),
    ("fine tun", "fine-tuning"),
    ("finetun", "fine-tuning"),
    ("batch", "batch job"),
)


@dataclass(frozen=True, slots=True)
class Product:
    """What a line item charges for: a model's tokens (per request) or a charge of its own."""

    model: str  # the catalog model id, "" for a charge that names none
    token_type: str  # input, cached_input, output, or "" (images, minutes, ...)
    charge: str  # "" for per-request usage, else what kind of charge (dedicated endpoint, fine-tuning, ...)


def product_of(name: str, pricing_dimensions: Mapping[str, str], attributes: Mapping[str, str]) -> Product:
    """How a line item's product name, pricing dimensions and attributes identify a model and token type."""
    return product_named(name, str(pricing_dimensions.get("model") or attributes.get("model") or ""))


@lru_cache(maxsize=4096)
def product_named(name: str, model: str) -> Product:
    """The product of a line item by its name and the model it names ("" for none)."""
    lowered = name.lower()
    charge = next((kind for prefix, kind in NOT_PER_REQUEST if lowered.startswith(prefix)), "")
    if not charge and not model:
        charge = "other"
    measure = lowered.rsplit(" - ", 1)[-1] if " - " in lowered else ""
    token_type = ""
    if "token" in measure:
        token_type = "cached_input" if "cached" in measure else "input" if "input" in measure else (
            "output" if "output" in measure else ""
        )
    return Product(model, token_type, charge)


def unit_of(product_name: str) -> str:
    """What a line's quantity counts when it is not tokens: "minutes", "images"..."""
    measure = product_name.rsplit(" - ", 1)[-1].lower() if " - " in product_name else ""
    return "minutes" if "minute" in measure else measure
