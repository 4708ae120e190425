"""The alert kinds: what each one watches, its defaults, and how it ends."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import models


class Kind(models.TextChoices):
    BILLING = "billing", "Credits exhausted (HTTP 402)"
    KEY_INVALID = "key_invalid", "Key invalid (HTTP 401)"
    HEADROOM = "headroom", "Rate-limit headroom low"
    ERROR_RATE = "error_rate", "Error rate per category"
    FINETUNE_FAILED = "finetune_failed", "Fine-tune job failed"
    FINETUNE_STUCK = "finetune_stuck", "Fine-tune job stuck"
    BATCH_FAILED = "batch_failed", "Batch failed or expired"
    MODEL_REMOVED = "model_removed", "Model in use removed from the catalog"
    POLLER_STALE = "poller_stale", "Poller stale"
    LOGS_DROPPED = "logs_dropped", "Proxy dropped request logs"
    APP_KEY_REJECTED = "app_key_rejected", "App key rejected by the proxy"
    UNPRICED_MODEL = "unpriced_model", "Unpriced model in use"
    ENDPOINT_IDLE = "endpoint_idle", "Dedicated endpoint billing with no traffic"
    ENDPOINT_NO_TIMEOUT = "endpoint_no_timeout", "Dedicated endpoint with no inactive timeout"
    ENDPOINT_ERROR = "endpoint_error", "Dedicated endpoint in ERROR"
    ENDPOINT_SLOW_START = "endpoint_slow_start", "Dedicated endpoint slow to start"
    BUDGET = "budget", "Spend budget threshold reached"
    SPEND_ANOMALY = "spend_anomaly", "Spend anomaly"


@dataclass(frozen=True, slots=True)
class KindDefaults:
    """Default rule values, created by the data migration; ops edit them in the admin."""

    threshold: float
    window_minutes: int
    renotify_minutes: int
    # A job that failed does not "recover": its alert ages out of the window silently.
    notify_resolved: bool = True


DEFAULTS: dict[str, KindDefaults] = {
    Kind.BILLING: KindDefaults(threshold=1, window_minutes=0, renotify_minutes=240),
    Kind.KEY_INVALID: KindDefaults(threshold=1, window_minutes=15, renotify_minutes=240),
    Kind.HEADROOM: KindDefaults(threshold=10, window_minutes=5, renotify_minutes=120),
    Kind.ERROR_RATE: KindDefaults(threshold=20, window_minutes=10, renotify_minutes=120),
    Kind.FINETUNE_FAILED: KindDefaults(
        threshold=1, window_minutes=1440, renotify_minutes=0, notify_resolved=False
    ),
    Kind.FINETUNE_STUCK: KindDefaults(threshold=60, window_minutes=0, renotify_minutes=0),
    Kind.BATCH_FAILED: KindDefaults(
        threshold=1, window_minutes=1440, renotify_minutes=0, notify_resolved=False
    ),
    Kind.MODEL_REMOVED: KindDefaults(threshold=1, window_minutes=10080, renotify_minutes=1440),
    Kind.POLLER_STALE: KindDefaults(threshold=1, window_minutes=0, renotify_minutes=240),
    Kind.LOGS_DROPPED: KindDefaults(threshold=1, window_minutes=10, renotify_minutes=120),
    # A client with a wrong app key is its owner's problem, not an outage: a higher bar, one message.
    Kind.APP_KEY_REJECTED: KindDefaults(
        threshold=20, window_minutes=15, renotify_minutes=0, notify_resolved=False
    ),
    Kind.UNPRICED_MODEL: KindDefaults(threshold=1, window_minutes=60, renotify_minutes=1440),
    # Thresholds in minutes. An idle endpoint bills every minute: remind every few hours while it does.
    Kind.ENDPOINT_IDLE: KindDefaults(threshold=30, window_minutes=0, renotify_minutes=240),
    Kind.ENDPOINT_NO_TIMEOUT: KindDefaults(threshold=60, window_minutes=0, renotify_minutes=1440),
    Kind.ENDPOINT_ERROR: KindDefaults(threshold=0, window_minutes=0, renotify_minutes=240),
    Kind.ENDPOINT_SLOW_START: KindDefaults(threshold=20, window_minutes=0, renotify_minutes=0),
    # Each threshold of each budget speaks once per period; the period's end resolves it silently
    # (PagerDuty still gets its resolve).
    Kind.BUDGET: KindDefaults(threshold=1, window_minutes=0, renotify_minutes=0, notify_resolved=False),
    Kind.SPEND_ANOMALY: KindDefaults(threshold=2, window_minutes=60, renotify_minutes=0),
}

# What threshold and window mean for each kind, shown as help in the admin and on the alerts page.
MEANING: dict[str, str] = {
    Kind.BILLING: "fires on the first 402 of a key; resolves on its next successful call",
    Kind.KEY_INVALID: "a Together key's health invalid, or at least <threshold> 401s from Together on it"
    " within the window",
    Kind.HEADROOM: "headroom below <threshold>% in every snapshot of the last <window> minutes",
    Kind.ERROR_RATE: "a category's errors above <threshold>% of requests over the window (20+ requests)",
    Kind.FINETUNE_FAILED: "a job that failed within the last <window> minutes",
    Kind.FINETUNE_STUCK: "pending or queued for more than <threshold> minutes",
    Kind.BATCH_FAILED: "a batch that failed or expired within the last <window> minutes",
    Kind.MODEL_REMOVED: "removed while our traffic used it within the last <window> minutes",
    Kind.POLLER_STALE: "no successful run for twice the poller's interval",
    Kind.LOGS_DROPPED: "at least <threshold> request logs dropped within the last <window> minutes",
    Kind.APP_KEY_REJECTED: "at least <threshold> requests with one missing, unknown, revoked or expired"
    " app key refused by the proxy within the window (they never reached Together)",
    Kind.UNPRICED_MODEL: "at least <threshold> requests to a model with no price within <window> minutes",
    Kind.ENDPOINT_IDLE: "a dedicated endpoint STARTED for at least <threshold> minutes with no request"
    " recorded to it in the last <threshold> minutes (it bills per minute all the same)",
    Kind.ENDPOINT_NO_TIMEOUT: "a dedicated endpoint STARTED for more than <threshold> minutes with no"
    " inactive_timeout (it never stops by itself)",
    Kind.ENDPOINT_ERROR: "a dedicated endpoint in ERROR for more than <threshold> minutes",
    Kind.ENDPOINT_SLOW_START: "a dedicated endpoint PENDING or STARTING for more than <threshold> minutes",
    Kind.BUDGET: "a budget's spend reached one of its thresholds (set per budget on /budgets/) in its"
    " period; once per threshold and period",
    Kind.SPEND_ANOMALY: "an upstream key and model spent more than <threshold> times the same hour's"
    " 7-day average within the last <window> minutes (and at least SPEND_ANOMALY_MIN_USD)",
}


def unknown_kinds(names: list[str]) -> list[str]:
    """The names in the list that are not alert kinds, sorted."""
    return sorted(set(names) - set(Kind.values))
