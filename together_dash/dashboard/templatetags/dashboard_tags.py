"""Template filters for the dashboard pages: category colours, headroom levels, percentages."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import template
from django.utils.html import format_html

from together_dash.dashboard.palette import CATEGORY_COLORS, headroom_level
from together_dash.dashboard.views.common import money as _money
from together_dash.dashboard.views.common import percent as _percent

register = template.Library()


@register.filter
def category_color(category: str) -> str:
    return CATEGORY_COLORS.get(category, "#6b7280")


@register.simple_tag
def category_swatch(category: str) -> str:
    """A small square in the category's colour, drawn as SVG: a fill attribute needs no inline style (CSP)."""
    return format_html(
        '<svg class="swatch" viewBox="0 0 1 1" aria-hidden="true">'
        '<rect width="1" height="1" fill="{}"/></svg>',
        category_color(category),
    )


@register.filter
def headroom(pct: float | None) -> str:
    """ok, low or critical."""
    return headroom_level(pct)


@register.filter
def rate(value: float | None) -> str:
    """0.125 -> 12.5%; None -> a dash."""
    return _percent(value)


@register.filter
def progress_value(pct: float | None) -> str:
    """A <progress> value: one decimal, always a dot, whatever the locale."""
    return "" if pct is None else f"{pct:.1f}"


@register.filter
def price(value: Decimal | None) -> str:
    """0.880000 -> 0.88: catalog prices without trailing zeros; a dash when unknown."""
    if value is None:
        return "–"
    return format(value.normalize(), "f")


UNPRICED_TITLE = "The catalog has no price for this model: the cost is unknown, and left out of every total."


@register.simple_tag
def unpriced_badge(count: int | None = None) -> str:
    """The visible unpriced state of a cost: a badge, with how many requests it leaves out if given."""
    label = "unpriced" if count is None else f"{count:,} unpriced"
    return format_html('<span class="badge warn unpriced" title="{}">{}</span>', UNPRICED_TITLE, label)


@register.simple_tag
def request_cost(log: Any, places: int = 5) -> str:
    """A request's cost in USD; the unpriced badge when its model has no price; a dash when unknowable."""
    if log.cost_usd is not None:
        return f"${log.cost_usd:.{places}f}"
    return unpriced_badge() if log.is_unpriced else "–"


@register.filter
def get_item(mapping: dict[str, Any] | None, name: str) -> Any:
    return (mapping or {}).get(name)


@register.filter
def dollars(value: Decimal | None) -> str:
    """An estimate to the cent: $1,234.56, -$12.30 (below zero), < $0.01; a dash when unknown."""
    if value is None:
        return "–"
    return f"-{_money(-value)}" if value < 0 else _money(value)


@register.filter
def hours_span(hours: Decimal | None) -> str:
    """37.5 hours; 12.3 days (296 hours) past two days; a dash when unknown."""
    if hours is None:
        return "–"
    if hours < 48:
        return f"{hours:.1f} hours"
    return f"{hours / 24:,.1f} days ({hours:,.0f} hours)"


@register.filter
def usd(value: Decimal | None, places: int = 6) -> str:
    """An exact amount in USD to fixed places, "-$0.000120" below zero; a dash when unknown."""
    if value is None:
        return "–"
    amount = Decimal(value).quantize(Decimal(1).scaleb(-int(places)))
    return f"-${-amount:,.{places}f}" if amount < 0 else f"${amount:,.{places}f}"


@register.filter
def usd_short(value: Decimal | None) -> str:
    """A headline amount: cents, or six places below a cent (a small bill is not "$0.00")."""
    if value is None or abs(value) >= Decimal("0.01") or value == 0:
        return usd(value, 2)
    return usd(value, 6)
