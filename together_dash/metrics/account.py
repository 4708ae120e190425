"""The account's Prometheus series, read from the database at scrape time.

The process that answers a scrape computes them, once per scrape however many processes there are, from
a fixed handful of aggregate queries: the day rollups and error groups (traffic), the latest rate-limit
snapshots, the job tables, poller heartbeats and firing alerts. Never the request log. The counters come
from rows that retention never prunes and whose counts only grow, so they never go down.

Every label value comes from a bounded set: upstream keys by name (never a secret), categories and kinds
from the classifier's taxonomy, job statuses from the API's lists, alert kinds from ours, and models
capped by METRICS_MAX_MODELS. The first models ever used keep their names and the later ones count
under "other": that set only changes when the cap does, so a model's count never moves between series.
"""
from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import DatabaseError
from django.utils import timezone
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from together_dash.alerts.evaluation import key_subject
from together_dash.alerts.kinds import Kind
from together_dash.alerts.models import Alert
from together_dash.dashboard.queries import QUOTA_LOOKBACK, Headroom, latest_headroom
from together_dash.dashboard.ranges import Range
from together_dash.jobs.models import BatchJob, FineTuneJob
from together_dash.keys.models import TogetherKey
from together_dash.pollers.models import PollerHeartbeat
from together_dash.together.errors import KINDS
from together_dash.together.types import BatchStatus, FineTuneStatus
from together_dash.traffic.models import CATEGORY_CHOICES, ErrorGroup
from together_dash.traffic.rollups import AllTimeUsage, all_time_usage

logger = logging.getLogger(__name__)

OTHER = "other"
NONE = "(none)"  # no model in the request, or no upstream key (passthrough, refused before one was chosen)
KEY_LEVEL = "(all)"  # a rate limit Together reported for the key, binding every model
CATEGORIES = frozenset(category for category, _ in CATEGORY_CHOICES)
KNOWN_KINDS = frozenset(KINDS)


@dataclass(frozen=True, slots=True)
class ModelLabels:
    """The model label of a model id: its name when it is one of the named models, else "other"."""

    named: frozenset[str]

    def __call__(self, model: str) -> str:
        if not model:
            return NONE
        return model if model in self.named else OTHER


def model_labels(usage: Iterable[AllTimeUsage], cap: int) -> ModelLabels:
    """The first `cap` models by the day they were first used (then by name) keep their names."""
    first_day: dict[str, datetime] = {}
    for row in usage:
        if row.model and (row.model not in first_day or row.first_day < first_day[row.model]):
            first_day[row.model] = row.first_day
    ordered = sorted(first_day, key=lambda model: (first_day[model], model))
    return ModelLabels(frozenset(ordered[: max(0, cap)]))


class KeyLabels:
    """The upstream_key label of a key id: the key's name, never anything of its secret."""

    def __init__(self) -> None:
        self.names: dict[int, str] = dict(TogetherKey.objects.values_list("id", "name"))

    def __call__(self, key_id: int | None) -> str:
        if key_id is None:
            return NONE
        return self.names.get(key_id, f"#{key_id}")  # a key added since the names were read


class AccountCollector:
    """A prometheus_client collector: the account's series, computed on every scrape."""

    def describe(self) -> list[Metric]:
        return []  # registering must not query the database

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        try:
            families = list(account_families())
        except DatabaseError:
            logger.warning("The account's metrics could not be read from the database", exc_info=True)
            families = []
        yield from families
        yield GaugeMetricFamily(
            "together_dash_account_up",
            "1 when the account's series below could be read from the database, 0 when not.",
            value=1 if families else 0,
        )
        yield GaugeMetricFamily(
            "together_dash_account_collect_seconds",
            "Time this scrape spent reading the account's series from the database.",
            value=time.perf_counter() - started,
        )


def account_families(now: datetime | None = None) -> Iterator[Metric]:
    """Every account series, from about ten queries whatever the size of the tables."""
    now = now or timezone.now()
    usage = all_time_usage()
    keys = KeyLabels()
    models = model_labels(usage, settings.METRICS_MAX_MODELS)
    yield from usage_families(usage, keys, models)
    yield errors_family(ErrorGroup.objects.all_time_counts(), keys, models)
    yield headroom_family(latest_headroom(Range("metrics", now - QUOTA_LOOKBACK, now), limit=None), models)
    yield status_family("together_dash_finetune_jobs", "Fine-tune jobs in each status, as last polled.",
                        FineTuneJob.objects.counts_by_status(), FineTuneStatus.ALL)
    yield status_family("together_dash_batch_jobs", "Batch jobs in each status, as last polled.",
                        BatchJob.objects.counts_by_status(), BatchStatus.ALL)
    yield from poller_families(PollerHeartbeat.objects.all(), now)
    firing = Alert.objects.filter(state=Alert.State.FIRING).values_list("rule__kind", "subject")
    yield from alert_families(firing, keys)


def usage_families(usage: list[AllTimeUsage], keys: KeyLabels, models: ModelLabels) -> Iterator[Metric]:
    requests = CounterMetricFamily(
        "together_dash_requests", "Requests recorded (proxy and ingest) since the first, by model and "
        "upstream key.", labels=["model", "upstream_key"])
    tokens = CounterMetricFamily(
        "together_dash_tokens", "Tokens the recorded requests reported, by type (prompt, completion), model "
        "and upstream key.", labels=["type", "model", "upstream_key"])
    cost = CounterMetricFamily(
        "together_dash_cost_usd", "Cost of the recorded requests in US dollars at the catalog's prices, by "
        "model and upstream key.", labels=["model", "upstream_key"])
    sums: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0, 0, 0.0])
    for row in usage:
        total = sums[(models(row.model), keys(row.upstream_key_id))]
        total[0] += row.requests
        total[1] += row.prompt_tokens
        total[2] += row.completion_tokens
        total[3] += float(row.cost_usd)
    for (model, key), (count, prompt, completion, dollars) in sorted(sums.items()):
        requests.add_metric([model, key], count)
        tokens.add_metric(["prompt", model, key], prompt)
        tokens.add_metric(["completion", model, key], completion)
        cost.add_metric([model, key], dollars)
    return iter((requests, tokens, cost))


def errors_family(counts: Iterable[dict], keys: KeyLabels, models: ModelLabels) -> Metric:
    errors = CounterMetricFamily(
        "together_dash_errors", "Errors recorded since the first, by category and kind (the classifier's), "
        "model and upstream key.", labels=["category", "kind", "model", "upstream_key"])
    sums: dict[tuple[str, str, str, str], int] = defaultdict(int)
    for row in counts:
        category = row["category"] if row["category"] in CATEGORIES else OTHER
        kind = row["kind"] if row["kind"] in KNOWN_KINDS else OTHER
        sums[(category, kind, models(row["model"]), keys(row["upstream_key_id"]))] += row["n"] or 0
    for labels, count in sorted(sums.items()):
        errors.add_metric(list(labels), count)
    return errors


def headroom_family(latest: Iterable[Headroom], models: ModelLabels) -> Metric:
    ratio = GaugeMetricFamily(
        "together_dash_ratelimit_remaining_ratio", "Share of the rate limit left (the tighter of requests "
        "and tokens) in the latest snapshot of the last hour, by upstream key and model ((all): the key's "
        "own limit).", labels=["upstream_key", "model"])
    lowest: dict[tuple[str, str], float] = {}
    for headroom in latest:
        pair = (headroom.key_name, models(headroom.model) if headroom.model else KEY_LEVEL)
        value = headroom.headroom_pct / 100.0
        lowest[pair] = min(value, lowest.get(pair, value))  # models folded into "other": the tightest
    for labels, value in sorted(lowest.items()):
        ratio.add_metric(list(labels), value)
    return ratio


def status_family(name: str, documentation: str, counts: dict[str, int], statuses: Iterable[str]) -> Metric:
    """One series per known status (0 when no job has it), and "other" for any status we do not know."""
    family = GaugeMetricFamily(name, documentation, labels=["status"])
    known = tuple(statuses)
    for status in known:
        family.add_metric([status], counts.get(status, 0))
    unknown = sum(count for status, count in counts.items() if status not in known)
    if unknown:
        family.add_metric([OTHER], unknown)
    return family


def poller_families(heartbeats: Iterable[PollerHeartbeat], now: datetime) -> Iterator[Metric]:
    since = GaugeMetricFamily(
        "together_dash_poller_last_success_seconds", "Seconds since the poller last succeeded (since it was "
        "set up, when it never has); stale past twice its interval.", labels=["poller"])
    interval = GaugeMetricFamily(
        "together_dash_poller_interval_seconds", "How often the poller is scheduled to run.",
        labels=["poller"])
    for heartbeat in heartbeats:
        since.add_metric([heartbeat.name], max(0.0, (now - heartbeat.silent_since).total_seconds()))
        interval.add_metric([heartbeat.name], heartbeat.interval_seconds)
    return iter((since, interval))


def alert_families(firing: Iterable[tuple[str, str]], keys: KeyLabels) -> Iterator[Metric]:
    by_kind = GaugeMetricFamily(
        "together_dash_alerts_firing", "Alerts firing now, by kind (one per subject: a key, a poller...).",
        labels=["kind"])
    billing = GaugeMetricFamily(
        "together_dash_billing_exhausted", "1 while the key's billing alert fires (Together answered 402: "
        "credits or spend limit exhausted), else 0.", labels=["upstream_key"])
    counts: dict[str, int] = defaultdict(int)
    billing_subjects: set[str] = set()
    for kind, subject in firing:
        counts[kind] += 1
        if kind == Kind.BILLING:
            billing_subjects.add(subject)
    for kind in Kind.values:
        by_kind.add_metric([kind], counts.get(kind, 0))
    key_ids: list[int | None] = sorted(keys.names)
    if key_subject(None) in billing_subjects:
        key_ids.append(None)
    for key_id in key_ids:
        billing.add_metric([keys(key_id)], 1 if key_subject(key_id) in billing_subjects else 0)
    return iter((by_kind, billing))
