"""Realistic request-log traffic for demos and benchmarks: millions of rows, loaded the fast way.

Traffic follows a daily and weekly shape over the last D days, spread over several upstream keys and
the catalog's real model ids. Most requests succeed with realistic tokens, latency, time to first token
and cost; errors come in realistic proportions and episodes (429 bursts, credits running out, capacity
incidents, context overflows, unknown models, a revoked key), made from Together's own error bodies and
sorted by the real classifier.

On PostgreSQL the rows stream into the table with binary COPY, chunk by chunk (never all in memory), and
the error groups and minute, hour and day rollups are then built with traffic.bulk_load's set-based SQL
from the rows just loaded, counting exactly what recording.record_entries() would have counted. Elsewhere
(SQLite) the rows go through record_entries() in batches, plenty for the ten thousands a developer needs.
"""

from __future__ import annotations

import bisect
import math
import re
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import accumulate, islice
from random import Random

import httpx
from django.conf import settings
from django.db import connection, transaction
from django.db.backends.utils import CursorWrapper
from django.utils import timezone

from together_dash.catalog.models import ModelInfo
from together_dash.catalog.pricing import Price
from together_dash.catalog.pricing import request_cost as request_cost_of
from together_dash.keys.models import TogetherKey
from together_dash.simulator import catalog as simulator_catalog
from together_dash.simulator import errors as bodies
from together_dash.together.errors import classify_error
from together_dash.traffic import retention
from together_dash.traffic.bulk_load import build_rollups, count_groups
from together_dash.traffic.entries import LogEntry
from together_dash.traffic.models import ErrorGroup, RequestLog, UsageDay, UsageHour, UsageMinute
from together_dash.traffic.recording import LOG_COLUMNS, group_identity, record_entries

COPY_CHUNK = 50_000  # rows per COPY statement; error groups of a chunk are created before it is sent
RECORD_BATCH = 1_000  # rows per record_entries() call on the fallback path
KEY_NAMES = ("prod-chat", "prod-batch", "staging", "eval", "research")
KEY_SHARES = (0.42, 0.26, 0.07, 0.15, 0.10)
REQUEST_LIMITS = (100, 50, 10, 30, 75)  # x-ratelimit-limit per second: the 6,000 to 600 RPM tiers
MINUTE = timedelta(minutes=1)

# Share of all requests in each model, for the ids the simulator serves; a bigger catalog's other models
# form a long tail.
POPULARITY: dict[str, float] = {
    "meta-llama/Llama-3.3-70B-Instruct-Turbo": 30,
    "meta-llama/Meta-Llama-3.1-8B-Instruct-Turbo": 20,
    "deepseek-ai/DeepSeek-V3": 10,
    "BAAI/bge-large-en-v1.5": 8,
    "Qwen/Qwen2.5-72B-Instruct-Turbo": 6,
    "meta-llama/Llama-4-Maverick-17B-128E-Instruct-FP8": 6,
    "deepseek-ai/DeepSeek-R1": 4,
    "togethercomputer/m2-bert-80M-32k-retrieval": 3,
    "Qwen/Qwen2.5-7B-Instruct-Turbo": 3,
    "Qwen/Qwen2.5-Coder-32B-Instruct": 3,
    "meta-llama/Meta-Llama-3.1-405B-Instruct-Turbo": 2,
    "meta-llama/Llama-3.2-3B-Instruct-Turbo": 2,
    "meta-llama/Llama-Guard-3-8B": 2,
    "mistralai/Mixtral-8x7B-Instruct-v0.1": 2,
    "Salesforce/Llama-Rank-V1": 1.5,
    "google/gemma-2-27b-it": 1.5,
    "black-forest-labs/FLUX.1-schnell": 1,
}
LONG_TAIL = 0.1
CHAT_TYPES = frozenset({"chat", "code", "language", "moderation"})
REASONING = re.compile(r"DeepSeek-R1|QwQ", re.IGNORECASE)
PARAMETERS = re.compile(r"(\d+)B\b")
# Ids people still send after Together retired them, or misspell: they answer 404 model_not_found.
UNKNOWN_MODELS = (
    "meta-llama/Llama-3-70b-chat-hf",
    "togethercomputer/llama-2-70b-chat",
    "meta-llama/Llama-3.3-70B-Instruct",
)
ENDPOINTS = {
    "chat": "/v1/chat/completions",
    "language": "/v1/completions",
    "code": "/v1/chat/completions",
    "moderation": "/v1/chat/completions",
    "embedding": "/v1/embeddings",
    "rerank": "/v1/rerank",
    "image": "/v1/images/generations",
}

# Background errors per request, outside any incident: (template, probability).
BACKGROUND_ERRORS: tuple[tuple[str, float], ...] = (
    ("rate_request", 0.0030),
    ("context_overflow", 0.0045),
    ("invalid_request", 0.0015),
    ("unknown_model", 0.0008),
    ("server_error", 0.0012),
    ("overloaded", 0.0008),
    ("gateway_timeout", 0.0003),
    ("timeout", 0.0002),
    ("connection_error", 0.0001),
)
_BACKGROUND_AT = list(accumulate(p for _, p in BACKGROUND_ERRORS))
_BACKGROUND_NAMES = [name for name, _ in BACKGROUND_ERRORS]


@dataclass(frozen=True, slots=True)
class GenerateResult:
    """What one run loaded, how and how fast."""

    rows: int
    seconds: float
    method: str  # "copy" (PostgreSQL) or "record_entries"
    error_groups: int

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


def generate_request_logs(
    count: int,
    days: int = 30,
    keys: int = 5,
    seed: int = 1,
    truncate: bool = False,
    now: datetime | None = None,
    progress: Callable[[int], None] | None = None,
) -> GenerateResult:
    """Load `count` request logs spread over the last `days`, with their error groups and rollups."""
    started = time.perf_counter()
    if truncate:
        truncate_traffic()
    end = (now or timezone.now()).astimezone(UTC).replace(second=0, microsecond=0)
    traffic = Traffic(
        count, end - timedelta(days=days), days * 24 * 60, ensure_keys(keys), load_models(), seed
    )
    on_postgresql = connection.vendor == "postgresql"
    loader = _load_by_copy if on_postgresql else _load_by_record_entries
    loader(traffic, end, progress or (lambda rows: None))
    seconds = time.perf_counter() - started
    groups = ErrorGroup.objects.count()
    return GenerateResult(count, seconds, "copy" if on_postgresql else "record_entries", groups)


def truncate_traffic() -> None:
    """Empty request logs, error groups and rollups (keys and the catalog stay)."""
    tables = [model._meta.db_table for model in (RequestLog, ErrorGroup, UsageMinute, UsageHour, UsageDay)]
    quoted = [connection.ops.quote_name(table) for table in tables]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # Inside a transaction that already wrote rows (a test), their deferred foreign-key checks
            # must run first: PostgreSQL refuses to TRUNCATE a table with pending trigger events.
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            cursor.execute(f"TRUNCATE {', '.join(quoted)}")
            cursor.execute("SET CONSTRAINTS ALL DEFERRED")  # Django declares its foreign keys deferred
            return
        for table in quoted:  # request logs first: they point at error groups
            cursor.execute(f"DELETE FROM {table}")  # noqa: S608 (table names from _meta) # nosec B608


# ---- keys and models ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyProfile:
    """An upstream key as traffic uses it: its share of requests and the limits its headers report."""

    id: int
    fingerprint: str
    share: float
    request_limit: int  # per second, like x-ratelimit-limit
    token_limit: int


def ensure_keys(count: int) -> list[KeyProfile]:
    """The upstream keys traffic goes through, created with throwaway secrets when missing."""
    names = [KEY_NAMES[i] if i < len(KEY_NAMES) else f"traffic-{i + 1}" for i in range(count)]
    existing = {key.name: key for key in TogetherKey.objects.filter(name__in=names)}
    profiles = []
    for i, name in enumerate(names):
        key = existing.get(name) or TogetherKey.create(name, "tgp_v1_" + secrets.token_urlsafe(32))
        share = KEY_SHARES[i] if i < len(KEY_SHARES) else 0.05
        limit = REQUEST_LIMITS[i] if i < len(REQUEST_LIMITS) else 10
        profiles.append(KeyProfile(key.id, key.fingerprint, share, limit, limit * 20_000))
    return profiles


@dataclass(frozen=True, slots=True)
class ModelProfile:
    """What shapes one model's requests: endpoint, speed, context length and prices (read per row)."""

    model_id: str
    type: str
    endpoint: str
    context_length: int
    price: Price
    popularity: float
    ms_per_token: float
    ttft_ms: float
    reasoning: bool


def model_profile(
    model_id: str,
    type_: str,
    context_length: int | None,
    input_price: Decimal | None,
    output_price: Decimal | None,
    cached_input_price: Decimal | None = None,
) -> ModelProfile:
    """Bigger models (by the parameter count in the id) answer slower, per token and to the first one."""
    sizes = [int(size) for size in PARAMETERS.findall(model_id)]
    root = math.sqrt(max(sizes) if sizes else 30)
    return ModelProfile(
        model_id,
        type_,
        ENDPOINTS[type_],
        context_length or 8192,
        Price(input_price, output_price, cached_input_price),
        POPULARITY.get(model_id, LONG_TAIL),
        4.0 + 1.6 * root,
        150.0 + 25.0 * root,
        bool(REASONING.search(model_id)),
    )


def load_models() -> list[ModelProfile]:
    """The polled catalog when there is one, else the models the simulator serves."""
    rows = ModelInfo.objects.exclude(state=ModelInfo.State.REMOVED).filter(type__in=ENDPOINTS)
    models = [
        model_profile(
            row.model_id, row.type, row.context_length, row.pricing_input, row.pricing_output,
            row.pricing_cached_input,
        )
        for row in rows
    ]
    return models or [
        model_profile(
            m.id, m.type, m.context_length, Decimal(str(m.input_price)), Decimal(str(m.output_price)),
            None if m.cached_input_price is None else Decimal(str(m.cached_input_price)),
        )
        for m in simulator_catalog.MODELS
        if m.serverless and m.type in ENDPOINTS
    ]


def request_cost(
    model: ModelProfile, prompt: int | None, completion: int | None, cached: int | None = None
) -> Decimal | None:
    """catalog.pricing's rule: cached prompt tokens at the cached-input price; unknown, never 0."""
    return request_cost_of(model.price, prompt, completion, cached)


# ---- the shape of traffic ----------------------------------------------------------------------------


def minute_weight(at: datetime) -> float:
    """Relative traffic at a moment: a European and a bigger American daytime peak, quieter weekends."""
    hour = at.hour + at.minute / 60
    europe = 0.55 * math.exp(-(((hour - 10.0) / 3.0) ** 2))
    america = 1.0 * math.exp(-(((hour - 17.5) / 3.5) ** 2))
    weekend = 0.45 if at.weekday() >= 5 else 1.0
    return (0.15 + europe + america) * weekend


def allot(count: int, weights: Sequence[float]) -> list[int]:
    """Split count into whole numbers proportional to the weights, summing to exactly count."""
    total = sum(weights) or 1.0
    counts, placed = [], 0
    for running in accumulate(weights):
        target = round(count * running / total)
        counts.append(target - placed)
        placed = target
    return counts


@dataclass(frozen=True, slots=True)
class Incident:
    """An episode of errors: from minute `start` to `end`, a share of matching requests fail."""

    start: int
    end: int
    template: str
    share: float
    key_id: int | None = None
    model_id: str | None = None

    def hits(self, key_id: int, model_id: str) -> bool:
        return (self.key_id is None or self.key_id == key_id) and (
            self.model_id is None or self.model_id == model_id
        )


def plan_incidents(
    rng: Random, minutes: int, keys: Sequence[KeyProfile], models: Sequence[ModelProfile]
) -> list[Incident]:
    """Rate-limit bursts most days, now and then credits running out, a revoked key, capacity trouble."""
    days = max(1, minutes // 1440)
    busy = [key.id for key in keys]
    shares = [key.share for key in keys]
    chat = [m for m in models if m.type in ("chat", "code")] or list(models)
    incidents = []
    for _ in range(days * 5):
        kind = "rate_request" if rng.random() < 0.7 else "rate_token"
        start = _busy_minute(rng, minutes)
        key_id = rng.choices(busy, shares)[0]
        incidents.append(Incident(start, start + rng.randint(3, 25), kind, rng.uniform(0.15, 0.6), key_id))
    for _ in range(max(1, days // 15)):
        start = rng.randrange(minutes)
        incidents.append(Incident(start, start + rng.randint(60, 480), "credits", 1.0, rng.choice(busy)))
    for _ in range(days // 20):
        start = rng.randrange(minutes)
        incidents.append(Incident(start, start + rng.randint(10, 60), "invalid_key", 1.0, rng.choice(busy)))
    for _ in range(max(1, days // 8)):
        start = _busy_minute(rng, minutes)
        model = rng.choices(chat, [m.popularity for m in chat])[0].model_id
        template = "overloaded" if rng.random() < 0.7 else "server_error"
        incidents.append(
            Incident(start, start + rng.randint(5, 45), template, rng.uniform(0.2, 0.5), None, model)
        )
    return sorted(incidents, key=lambda incident: incident.start)


def _busy_minute(rng: Random, minutes: int) -> int:
    """A minute of the range (its index), on a random day, mostly in the afternoon peak."""
    day = rng.randrange(max(1, minutes // 1440))
    hour = rng.gauss(16.0, 3.0) % 24
    return min(minutes - 1, day * 1440 + int(hour * 60))


# ---- error templates ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ErrorTemplate:
    """One kind of failure as it reaches the log: status, classification, message and typical latency."""

    status: int
    category: str
    kind: str
    message: str
    latency_ms: float
    upstream: bool = True  # False: no response came back, so no rate-limit headers and no request id


def build_template(
    name: str, model: ModelProfile, key: KeyProfile, variant: int
) -> tuple[str, ErrorTemplate]:
    """The model id the request named and the failure, classified by the real classifier."""
    requested, status, body, exc, latency = model.model_id, 0, b"", None, 50.0
    if name in ("rate_request", "rate_token"):
        limiter = "dynamic_request_limited" if name == "rate_request" else "dynamic_token_limited"
        limit = key.request_limit if name == "rate_request" else key.token_limit
        status, body, latency = 429, bodies.rate_limited(limiter, limit, 1), 25.0
    elif name == "credits":
        status, body, latency = 402, bodies.credit_limit(), 35.0
    elif name == "invalid_key":
        status, body, latency = 401, bodies.invalid_api_key(), 30.0
    elif name == "context_overflow":
        given, new_tokens = model.context_length - 400 + 977 * variant, 512 * (variant + 1)
        status, body, latency = 400, bodies.context_overflow(model.context_length, given, new_tokens), 60.0
    elif name == "invalid_request":
        message = ("Input validation error: `temperature` must be strictly positive", "temperature")
        status, body, latency = 400, bodies.invalid_request(*message), 40.0
    elif name == "unknown_model":
        requested = UNKNOWN_MODELS[variant % len(UNKNOWN_MODELS)]
        status, body, latency = 404, bodies.model_not_found(requested), 45.0
    elif name in ("server_error", "overloaded", "gateway_timeout"):
        status = {"server_error": 500, "overloaded": 503, "gateway_timeout": 504}[name]
        body, latency = bodies.server_error(status), {500: 2500.0, 503: 400.0, 504: 60000.0}[status]
    elif name == "timeout":
        status, exc, latency = 504, httpx.ReadTimeout("timed out"), 60000.0
    else:
        status, exc, latency = 502, httpx.ConnectError("[Errno 111] Connection refused"), 3.0
    classified = classify_error(status, body or None, path=model.endpoint, exc=exc)
    template = ErrorTemplate(
        status, classified.category, classified.kind, classified.message, latency, exc is None
    )
    return requested, template


# ---- rows --------------------------------------------------------------------------------------------

_AT = {column: position for position, column in enumerate(LOG_COLUMNS)}
_GROUP = _AT["error_group_id"]


@dataclass(slots=True)
class Traffic:
    """A deterministic stream of request-log rows (in LOG_COLUMNS order), oldest first."""

    count: int
    start: datetime
    minutes: int
    keys: list[KeyProfile]
    models: list[ModelProfile]
    seed: int
    rng: Random = field(init=False)
    incidents: list[Incident] = field(init=False)
    counts: list[int] = field(init=False)
    templates: dict[tuple, tuple[str, ErrorTemplate]] = field(default_factory=dict, init=False)
    key_shares: list[float] = field(init=False)
    key_models: list[list[float]] = field(init=False)
    normals: list[float] = field(init=False)

    def __post_init__(self) -> None:
        self.rng = Random(self.seed)
        self.normals = [self.rng.gauss(0.0, 1.0) for _ in range(65_536)]
        self.incidents = plan_incidents(self.rng, self.minutes, self.keys, self.models)
        self.counts = allot(self.count, self._weights())
        # Each key has its own mix of models: an eval key spreads wide, a product key sticks to a few.
        self.key_shares = list(accumulate(key.share for key in self.keys))
        self.key_models = [
            list(accumulate(m.popularity * self.rng.lognormvariate(0, 0.8) for m in self.models))
            for _ in self.keys
        ]

    def _weights(self) -> list[float]:
        """Per-minute traffic: the daily and weekly shape, slow growth, jitter, spikes during 429 bursts."""
        jitter = self.rng.lognormvariate
        weights = [
            minute_weight(self.start + MINUTE * i) * (0.85 + 0.3 * i / self.minutes) * jitter(0, 0.15)
            for i in range(self.minutes)
        ]
        for incident in self.incidents:
            if incident.template.startswith("rate_"):
                for i in range(incident.start, min(incident.end, self.minutes)):
                    weights[i] *= 1.8
        return weights

    def rows(self) -> Iterator[list]:
        peak = max(self.counts, default=0) or 1
        upcoming, active = list(self.incidents), []
        for index, n in enumerate(self.counts):
            while upcoming and upcoming[0].start <= index:
                active.append(upcoming.pop(0))
            active = [incident for incident in active if incident.end > index]
            if n:
                yield from self._minute_rows(self.start + MINUTE * index, n, 1.0 - 0.85 * n / peak, active)

    def _minute_rows(
        self, minute: datetime, n: int, headroom: float, active: list[Incident]
    ) -> Iterator[list]:
        rng, shares, keys, models = self.rng, self.key_shares, self.keys, self.models
        for offset in sorted([int(rng.random() * 60_000_000) for _ in range(n)]):
            which = bisect.bisect(shares, rng.random() * shares[-1])
            cumulative = self.key_models[which]
            key, model = keys[which], models[bisect.bisect(cumulative, rng.random() * cumulative[-1])]
            at = minute + timedelta(microseconds=offset)
            failure = self._failure(key, model, active)
            if failure is None:
                yield self._success(at, key, model, headroom)
            else:
                yield self._error(at, key, model, headroom, failure)

    def _failure(self, key: KeyProfile, model: ModelProfile, active: list[Incident]) -> str | None:
        rng = self.rng
        for incident in active:
            if incident.hits(key.id, model.model_id) and rng.random() < incident.share:
                return incident.template
        draw = rng.random()
        if draw >= _BACKGROUND_AT[-1]:
            return None
        name = _BACKGROUND_NAMES[bisect.bisect(_BACKGROUND_AT, draw)]
        if name == "context_overflow" and model.type not in ("chat", "code", "language"):
            return "invalid_request"
        return name

    def _template(self, name: str, key: KeyProfile, model: ModelProfile) -> tuple[str, ErrorTemplate]:
        variant = self.rng.randrange(4) if name in ("context_overflow", "unknown_model") else 0
        cache_key = (name, key.id if name.startswith("rate_") else 0, model.model_id, variant)
        found = self.templates.get(cache_key)
        if found is None:
            found = self.templates[cache_key] = build_template(name, model, key, variant)
        return found

    def _lognormal(self, mu: float, sigma: float) -> float:
        # From a pool of normal deviates: random.lognormvariate() would be a third of the row's cost.
        return math.exp(mu + sigma * self.normals[self.rng.getrandbits(16)])

    def _success(self, at: datetime, key: KeyProfile, model: ModelProfile, headroom: float) -> list:
        rng, lognormal = self.rng, self._lognormal
        stream, ttft, prompt, completion, cached = False, None, None, None, None
        if model.type in CHAT_TYPES:
            stream = rng.random() < 0.55
            prompt = min(int(lognormal(6.4, 1.1)) + 8, model.context_length // 2)
            completion = int(lognormal(6.8 if model.reasoning else 5.2, 0.9)) + 1
            work = model.ms_per_token * completion * (0.8 + 0.45 * rng.random())
            first = model.ttft_ms * lognormal(0, 0.35) + prompt * 0.02
            ttft = first if stream else None
            latency = first + work
            if prompt > 1024 and rng.random() < 0.2:
                cached = prompt // 2
        elif model.type == "image":
            latency = 1800.0 * lognormal(0, 0.3)
        else:  # embeddings and rerank report prompt tokens only
            prompt = min(int(lognormal(5.0, 0.9)) + 4, model.context_length)
            latency = (60.0 if model.type == "embedding" else 150.0) * lognormal(0, 0.4)
        total = None if prompt is None else prompt + (completion or 0)
        remaining = int(key.request_limit * headroom)
        return [  # in LOG_COLUMNS order
            at, "proxy", None, key.id, None, key.fingerprint, "POST", model.endpoint, model.model_id,
            model.model_id, stream, 200, latency, ttft, prompt, completion, total, cached,
            request_cost(model, prompt, completion, cached), f"{rng.getrandbits(64):016x}",
            key.request_limit, remaining, rng.random(), key.token_limit, int(key.token_limit * headroom),
            "", "", "", None,
        ]

    def _error(self, at: datetime, key: KeyProfile, model: ModelProfile, headroom: float, name: str) -> list:
        rng = self.rng
        requested, failure = self._template(name, key, model)
        latency = failure.latency_ms * self._lognormal(0, 0.3)
        limit = remaining = reset = token_limit = token_remaining = None
        request_id = ""
        if failure.upstream:
            limit, token_limit, reset = key.request_limit, key.token_limit, rng.random()
            remaining, token_remaining = int(limit * headroom), int(token_limit * headroom)
            request_id = f"{rng.getrandbits(64):016x}"
        if name == "rate_request":
            remaining, reset = 0, rng.uniform(0.05, 2.0)
        elif name == "rate_token":
            token_remaining, reset = 0, rng.uniform(0.05, 2.0)
        return [  # in LOG_COLUMNS order
            at, "proxy", None, key.id, None, key.fingerprint, "POST", model.endpoint, requested, "",
            model.type in CHAT_TYPES and rng.random() < 0.55, failure.status, latency, None,
            None, None, None, None, None, request_id,
            limit, remaining, reset, token_limit, token_remaining,
            failure.category, failure.kind, failure.message, None,
        ]


# ---- loading on PostgreSQL: COPY, then set-based groups and rollups ------------------------------------


def _qn(name: str) -> str:
    return connection.ops.quote_name(name)


def _load_by_copy(traffic: Traffic, end: datetime, progress: Callable[[int], None]) -> None:
    """One transaction: COPY the rows chunk by chunk, then count groups and rollups from what was loaded."""
    log_table = _qn(RequestLog._meta.db_table)
    with transaction.atomic(), connection.cursor() as cursor:
        # Hash aggregates over millions of rows stay in memory instead of spilling to disk.
        cursor.execute("SET LOCAL work_mem = '256MB'")
        cursor.execute(f"SELECT COALESCE(MAX(id), 0) FROM {log_table}")  # noqa: S608 (identifiers from _meta; values are parameters) # nosec B608
        after_id = cursor.fetchone()[0]
        rebuild = _drop_indexes_and_foreign_keys(cursor) if after_id == 0 else []
        linker = GroupLinker(cursor)
        rows, loaded = traffic.rows(), 0
        while chunk := list(islice(rows, COPY_CHUNK)):
            linker.link(chunk)
            _copy_chunk(cursor, chunk)
            loaded += len(chunk)
            progress(loaded)
        _rebuild(cursor, rebuild)
        # Fresh statistics, or the planner sizes the aggregates below for the table as it was before.
        cursor.execute(f"ANALYZE {log_table}")
        count_groups(cursor, after_id)
        build_rollups(cursor, after_id, minute_rollups_since(end))


def _drop_indexes_and_foreign_keys(cursor: CursorWrapper) -> list[str]:
    """Drop the empty log table's secondary indexes and foreign keys; returns the SQL that rebuilds them.

    PostgreSQL's own advice for populating a table: one index build after the load is several times
    cheaper than maintaining the index row by row, and one validating join replaces a foreign-key check
    per row. It all happens inside the load's transaction, so a failed load puts everything back.
    """
    table = RequestLog._meta.db_table
    cursor.execute(
        "SELECT i.relname, pg_get_indexdef(i.oid) FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
        "WHERE x.indrelid = %s::regclass AND NOT x.indisprimary "
        "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conrelid = x.indrelid AND c.conindid = i.oid)",
        [table],
    )
    indexes = cursor.fetchall()
    cursor.execute(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = %s::regclass AND contype = 'f'",
        [table],
    )
    foreign_keys = cursor.fetchall()
    for name, _ in indexes:
        cursor.execute(f"DROP INDEX {_qn(name)}")
    for name, _ in foreign_keys:
        cursor.execute(f"ALTER TABLE {_qn(table)} DROP CONSTRAINT {_qn(name)}")
    rebuild = [definition for _, definition in indexes]
    return rebuild + [
        f"ALTER TABLE {_qn(table)} ADD CONSTRAINT {_qn(name)} {how}" for name, how in foreign_keys
    ]


def _rebuild(cursor: CursorWrapper, statements: list[str]) -> None:
    if statements:
        cursor.execute("SET LOCAL maintenance_work_mem = '1GB'")  # index builds sort in memory
    for statement in statements:
        cursor.execute(statement)


_COPY_TYPES = {
    "DateTimeField": "timestamptz",
    "CharField": "text",
    "BooleanField": "bool",
    "SmallIntegerField": "int2",
    "IntegerField": "int4",
    "BigIntegerField": "int8",
    "BigAutoField": "int8",
    "FloatField": "float8",
    "DecimalField": "numeric",
}


def _log_copy_types() -> list[str]:
    """PostgreSQL type of each log column, which binary COPY must be told exactly."""
    fields = {f.column: getattr(f, "target_field", f) for f in RequestLog._meta.concrete_fields}
    return [_COPY_TYPES[fields[column].get_internal_type()] for column in LOG_COLUMNS]


def _copy_chunk(cursor: CursorWrapper, chunk: list[list]) -> None:
    columns = ", ".join(_qn(column) for column in LOG_COLUMNS)
    sql = f"COPY {_qn(RequestLog._meta.db_table)} ({columns}) FROM STDIN (FORMAT BINARY)"
    with connection.wrap_database_errors, cursor.cursor.copy(sql) as copy:
        copy.set_types(_log_copy_types())
        for row in chunk:
            copy.write_row(row)


class GroupLinker:
    """Gives each error row its group id before the row is copied, creating groups on first sight.

    A new group starts with count 0; count_groups() adds the loaded rows afterwards. Linking up front
    spares an UPDATE of every error row (and the dead row versions it would leave behind).
    """

    _COLUMNS = (
        "fingerprint",
        "category",
        "kind",
        "model",
        "endpoint",
        "upstream_key_id",
        "first_seen",
        "last_seen",
        "count",
        "last_message",
        "last_status",
        "state",
    )

    def __init__(self, cursor: CursorWrapper) -> None:
        self.cursor = cursor
        self.ids: dict[tuple, int] = {}

    def link(self, chunk: list[list]) -> None:
        fresh: dict[tuple, list] = {}
        for row in chunk:
            if row[_AT["category"]]:
                identity = group_identity(row)
                if identity not in self.ids and identity not in fresh:
                    fresh[identity] = row
        if fresh:
            self._create(fresh)
        for row in chunk:
            if row[_AT["category"]]:
                row[_GROUP] = self.ids[group_identity(row)]

    def _create(self, fresh: dict[tuple, list]) -> None:
        by_fingerprint = {}
        values = []
        for identity, row in sorted(fresh.items(), key=lambda item: ErrorGroup.make_fingerprint(*item[0])):
            fingerprint = ErrorGroup.make_fingerprint(*identity)
            by_fingerprint[fingerprint] = identity
            at, message, status = row[_AT["created_at"]], row[_AT["error_message"]], row[_AT["status_code"]]
            values.append([fingerprint, *identity, at, at, 0, message, status, ErrorGroup.State.OPEN])
        table = _qn(ErrorGroup._meta.db_table)
        columns = ", ".join(_qn(column) for column in self._COLUMNS)
        placeholders = ", ".join(["(" + ", ".join(["%s"] * len(self._COLUMNS)) + ")"] * len(values))
        self.cursor.execute(
            f"INSERT INTO {table} ({columns}) VALUES {placeholders} "  # noqa: S608 (identifiers from _meta) # nosec B608
            "ON CONFLICT (fingerprint) DO UPDATE SET fingerprint = excluded.fingerprint "
            "RETURNING id, fingerprint",
            [value for row in values for value in row],
        )
        for group_id, fingerprint in self.cursor.fetchall():
            self.ids[by_fingerprint[fingerprint]] = group_id


def minute_rollups_since(end: datetime) -> datetime:
    """The oldest minute bucket retention keeps (retention.prune deletes buckets before now - N days)."""
    cutoff = end - timedelta(days=settings.ROLLUP_MINUTE_RETENTION_DAYS)
    whole = cutoff.replace(second=0, microsecond=0)
    return whole if whole == cutoff else whole + MINUTE


# ---- loading elsewhere: record_entries in batches -------------------------------------------------------

_ENTRY_FIELDS = [column for column in LOG_COLUMNS if column not in ("cost_usd", "error_group_id")]


def _load_by_record_entries(traffic: Traffic, end: datetime, progress: Callable[[int], None]) -> None:
    """The ingest path itself: record_entries() costs and groups the rows and builds the rollups."""
    positions = [LOG_COLUMNS.index(column) for column in _ENTRY_FIELDS]
    rows, loaded = traffic.rows(), 0
    with transaction.atomic():
        while chunk := list(islice(rows, RECORD_BATCH)):
            entries = [
                LogEntry(**{name: row[at] for name, at in zip(_ENTRY_FIELDS, positions, strict=True)})
                for row in chunk
            ]
            record_entries(entries)
            loaded += len(chunk)
            progress(loaded)
        # record_entries() counts every minute; keep only what retention would keep, like the COPY path.
        retention.delete_before(UsageMinute, "bucket", minute_rollups_since(end), retention.BATCH_SIZE)
