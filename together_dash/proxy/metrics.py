"""The proxy's own Prometheus series, and its dropped-log count in the cache.

Each process counts what it proxied. With prometheus_client's multiprocess mode (core/metrics_dir.py,
set up by asgi.py) every web and proxy process writes its values to one folder and a scrape of any of
them sums them all; gauges say how they combine (multiprocess_mode). Label values come from small fixed
sets, whatever clients send: a path outside ENDPOINTS is "other", a status outside 100-599 "proxy_error".
"""
from __future__ import annotations

from functools import lru_cache

from django.core.cache import cache
from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

# No <name>_created series: multiprocess mode has none, so a scrape shows the same series in either mode.
disable_created_metrics()

# The cumulative count of request logs dropped, summed over every proxy process through the cache;
# the dashboard shows it and the logs_dropped alert watches it grow.
DROPPED_CACHE_KEY = "proxy:logs_dropped"

# The endpoint label: the API's resources, the version left out (/v1/models and /v2/projects/{id}/models
# are "models" and "projects"). Anything else is "other", so a client cannot add series.
ENDPOINTS = frozenset({
    "chat/completions", "completions", "embeddings", "images/generations", "audio/speech",
    "audio/transcriptions", "audio/translations", "rerank", "moderations", "models", "supported-models",
    "fine-tunes", "finetune", "batches", "files", "endpoints", "hardware", "whoami", "billing", "projects",
    "autoscale",
})
OTHER_ENDPOINT = "other"
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx", "proxy_error")

REQUESTS = Counter(
    "together_dash_proxy_requests_total",
    "Requests answered by the proxy, by endpoint and status class (proxy_error: no status at all).",
    ["endpoint", "status_class"],
)
UPSTREAM_LATENCY = Histogram(
    "together_dash_proxy_upstream_latency_seconds",
    "Time from forwarding a request to receiving the upstream response headers.",
    ["endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
TIME_TO_FIRST_TOKEN = Histogram(
    "together_dash_proxy_time_to_first_token_seconds",
    "Streamed responses: time from the request's arrival to the first upstream event (the logs' ttft).",
    ["endpoint"],
    buckets=(0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30),
)
LOG_BUFFER_SIZE = Gauge(
    "together_dash_proxy_log_buffer_size",
    "Request logs waiting in the proxy's buffers (including batches being written), all processes.",
    multiprocess_mode="livesum",
)
LOGS_DROPPED = Counter(
    "together_dash_proxy_logs_dropped_total",
    "Request logs dropped because the buffer was full or could not be written.",
)


@lru_cache(maxsize=512)
def endpoint_label(endpoint: str) -> str:
    """The endpoint label of a logged endpoint ("/v1/fine-tunes/{id}/events" -> "fine-tunes")."""
    parts = endpoint.strip("/").split("/")[1:3]
    if "/".join(parts) in ENDPOINTS:
        return "/".join(parts)
    return parts[0] if parts and parts[0] in ENDPOINTS else OTHER_ENDPOINT


def status_class(status: int | None) -> str:
    if status is None or not 100 <= status < 600:
        return "proxy_error"
    return STATUS_CLASSES[status // 100 - 1]


# The children, kept: labels() takes a lock and builds a key on every call, too much per request.
@lru_cache(maxsize=len(ENDPOINTS) * len(STATUS_CLASSES) + 16)
def _requests(endpoint: str, status_class: str) -> Counter:
    return REQUESTS.labels(endpoint, status_class)


@lru_cache(maxsize=len(ENDPOINTS) + 1)
def _latency(endpoint: str) -> Histogram:
    return UPSTREAM_LATENCY.labels(endpoint)


@lru_cache(maxsize=len(ENDPOINTS) + 1)
def _first_token(endpoint: str) -> Histogram:
    return TIME_TO_FIRST_TOKEN.labels(endpoint)


def count_request(endpoint: str, status: int | None) -> None:
    """Count one answered request under its endpoint label and status class."""
    _requests(endpoint, status_class(status)).inc()


def observe_upstream_latency(endpoint: str, seconds: float) -> None:
    _latency(endpoint).observe(seconds)


def observe_time_to_first_token(endpoint: str, seconds: float) -> None:
    _first_token(endpoint).observe(seconds)


def publish_dropped_to_cache(delta: int) -> None:
    """Add to the cumulative dropped count the dashboard reads (summed over all proxy processes)."""
    cache.add(DROPPED_CACHE_KEY, 0, timeout=None)
    cache.incr(DROPPED_CACHE_KEY, delta)


def dropped_logs_total() -> int:
    """Request logs every proxy process dropped, as far as the cache remembers."""
    return int(cache.get(DROPPED_CACHE_KEY) or 0)
