"""Prometheus metrics of the proxy, exposed by the dashboard's /metrics view, and its dropped-log count."""
from __future__ import annotations

from django.core.cache import cache
from prometheus_client import Counter, Gauge, Histogram

# The cumulative count of request logs dropped, summed over every proxy process through the cache;
# the dashboard shows it and the logs_dropped alert watches it grow.
DROPPED_CACHE_KEY = "proxy:logs_dropped"

REQUESTS = Counter(
    "together_dash_proxy_requests_total",
    "Requests answered by the proxy, by status class (proxy_error: no upstream answer).",
    ["status_class"],
)
UPSTREAM_LATENCY = Histogram(
    "together_dash_proxy_upstream_latency_seconds",
    "Time from forwarding a request to receiving the upstream response headers.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
LOG_BUFFER_SIZE = Gauge(
    "together_dash_proxy_log_buffer_size",
    "Request logs waiting in the proxy's buffer (including a batch being written).",
)
LOGS_DROPPED = Counter(
    "together_dash_proxy_logs_dropped_total",
    "Request logs dropped because the buffer was full or could not be written.",
)

_BY_CLASS = {name: REQUESTS.labels(name) for name in ("1xx", "2xx", "3xx", "4xx", "5xx", "proxy_error")}


def count_request(status: int | None) -> None:
    """Count one answered request under its status class."""
    if status is None or not 100 <= status < 600:
        _BY_CLASS["proxy_error"].inc()
        return
    _BY_CLASS[f"{status // 100}xx"].inc()


def publish_dropped_to_cache(delta: int) -> None:
    """Add to the cumulative dropped count the dashboard reads (summed over all proxy processes)."""
    cache.add(DROPPED_CACHE_KEY, 0, timeout=None)
    cache.incr(DROPPED_CACHE_KEY, delta)


def dropped_logs_total() -> int:
    """Request logs every proxy process dropped, as far as the cache remembers."""
    return int(cache.get(DROPPED_CACHE_KEY) or 0)
