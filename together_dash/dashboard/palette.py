"""Fixed colours and labels for the charts, so a category looks the same on every page and every day.

The category colours are Paul Tol's "muted" qualitative scheme, chosen to stay distinguishable with
the common forms of colour blindness; legends and tooltips always carry the name as well.
"""

from __future__ import annotations

from together_dash.together.types import FineTuneStatus
from together_dash.traffic.models import CATEGORY_CHOICES

CATEGORY_LABELS: dict[str, str] = dict(CATEGORY_CHOICES)
CATEGORY_COLORS: dict[str, str] = {
    "auth": "#332288",
    "billing": "#882255",
    "rate_limit": "#DDCC77",
    "validation": "#88CCEE",
    "not_found": "#999933",
    "server": "#CC6677",
    "network": "#44AA99",
}
assert CATEGORY_COLORS.keys() == CATEGORY_LABELS.keys()

REQUESTS_COLOR = "#1d4ed8"
ERRORS_COLOR = "#b91c1c"
# Billing reconciliation: what Together billed against what the dashboard observed (Okabe-Ito pair).
BILLED_COLOR = "#D55E00"
OBSERVED_COLOR = "#0072B2"

_WAITING, _WORKING, _DONE, _FAILED, _STOPPED = "#9ca3af", "#1d4ed8", "#15803d", "#b91c1c", "#4b5563"
FINETUNE_STATUS_COLORS: dict[str, str] = {
    FineTuneStatus.PENDING: _WAITING,
    FineTuneStatus.QUEUED: _WAITING,
    FineTuneStatus.RUNNING: _WORKING,
    FineTuneStatus.COMPRESSING: _WORKING,
    FineTuneStatus.UPLOADING: _WORKING,
    FineTuneStatus.CANCEL_REQUESTED: _STOPPED,
    FineTuneStatus.CANCELLED: _STOPPED,
    FineTuneStatus.ERROR: _FAILED,
    FineTuneStatus.USER_ERROR: _FAILED,
    FineTuneStatus.COMPLETED: _DONE,
}
OTHER_STATUS_COLOR = "#6b7280"

# Headroom under these percentages is shown as low (amber) or critical (red), with the word as well.
HEADROOM_LOW_PCT = 20.0
HEADROOM_CRITICAL_PCT = 5.0
HEADROOM_COLORS: dict[str, str] = {"ok": "#15803d", "low": "#b45309", "critical": "#b91c1c"}
TREND_COLORS: tuple[str, ...] = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9")


def headroom_level(pct: float | None) -> str:
    """ok, low or critical for a headroom percentage (unknown counts as ok: nothing says otherwise)."""
    if pct is not None and pct < HEADROOM_CRITICAL_PCT:
        return "critical"
    if pct is not None and pct < HEADROOM_LOW_PCT:
        return "low"
    return "ok"
