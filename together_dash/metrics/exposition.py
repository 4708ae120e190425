"""What a scrape of /metrics returns: the processes' own series and the account's, in Prometheus text.

The processes' series are this process's alone in single-process mode, and every web and proxy
process's in multiprocess mode (core/metrics_dir.py), summed from the files they write. The account's
series are computed here, once per scrape, from the database (account.py).
"""
from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from together_dash.core import metrics_dir
from together_dash.metrics.account import AccountCollector

PROCESSES = "proxy"
ACCOUNT = "account"
SERIES = (PROCESSES, ACCOUNT)


def process_series() -> Collector:
    """The web and proxy processes' own series: all of them from the shared folder, or this one's."""
    path = metrics_dir.active_dir()
    if path is None:
        return REGISTRY  # the proxy's series plus this process's own (CPU, memory, GC)
    metrics_dir.forget_dead_processes(path)
    return MultiProcessCollector(None, path=path)


def exposition(series: Iterable[str] = SERIES) -> bytes:
    """The scrape's body, in Prometheus' text format."""
    registry = CollectorRegistry()
    if PROCESSES in series:
        registry.register(process_series())
    if ACCOUNT in series:
        registry.register(AccountCollector())
    return generate_latest(registry)
