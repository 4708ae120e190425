"""Template filters of the budgets page."""
from __future__ import annotations

from decimal import Decimal

from django import template

from together_dash.budgets.models import format_usd

register = template.Library()


@register.filter
def budget_usd(amount: Decimal | None) -> str:
    """$1,234.50; $0.00004 for spend under a cent."""
    return "–" if amount is None else f"${format_usd(amount)}"
