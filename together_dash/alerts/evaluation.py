"""Deciding what fires: billing transitions for every recorded batch, and the periodic evaluation of the rest.

Each rule kind has a small function returning the subjects firing now ({subject: (label, context)});
apply_rule() turns that into transitions through the Alert state machine, whose conditional UPDATEs make
a duplicated beat or two workers harmless. Every query is a method of the app that owns the data; this
module returns the notifications it wrote and tasks.py hands them to the workers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from together_dash.alerts.emails import absolute
from together_dash.alerts.kinds import Kind
from together_dash.alerts.models import Alert, AlertRule, Notification
from together_dash.budgets.models import Budget, format_usd
from together_dash.budgets.spend import BudgetStatus, budget_statuses
from together_dash.catalog.models import ModelInfo
from together_dash.endpoints.models import BOOTING, Endpoint
from together_dash.endpoints.polling import POLLER as ENDPOINTS_POLLER
from together_dash.endpoints.usage import EndpointUsage, duration_text, requests_since, usage_today
from together_dash.jobs.models import BatchJob, FineTuneJob
from together_dash.keys.models import RateLimitSnapshot, TogetherKey
from together_dash.pollers.models import PollerKeyState
from together_dash.pollers.runs import stale_pollers
from together_dash.pollers.schedule import interval_for
from together_dash.proxy.metrics import dropped_logs_total
from together_dash.together.types import EndpointState
from together_dash.traffic.models import APP_KEY_REJECTED, ErrorGroup, RequestLog
from together_dash.traffic.rollups import (
    DAY,
    billing_errors_since,
    minute_totals_since,
    spend_by_key_and_model,
    unpriced_models_since,
)

if TYPE_CHECKING:
    from together_dash.traffic.recording import KeyOutcome

logger = logging.getLogger(__name__)

Firing = dict[str, tuple[str, dict[str, Any]]]
MIN_REQUESTS_FOR_RATE = 20
# A 402 storm already has its one billing email; an error-rate email about it would be a second.
OWN_ALERT = {"billing"}
BACKSTOP_WINDOW = timedelta(minutes=10)


# ---- billing: from every recorded batch --------------------------------------------------------------


def key_subject(key_id: int | None) -> str:
    return f"key:{key_id if key_id is not None else '-'}"


def billing_transitions(keys: dict[int | None, KeyOutcome]) -> list[Notification | None]:
    """Fire on a batch's new 402s, resolve on its successful billed calls, per upstream key."""
    if not keys:
        return []
    subjects = {key_subject(key_id): key_id for key_id in keys}
    # The one indexed query per batch: which of these keys' billing alerts are firing now.
    firing = set(
        Alert.objects.filter(
            rule__kind=Kind.BILLING, state=Alert.State.FIRING, subject__in=subjects
        ).values_list("subject", flat=True)
    )
    notifications: list[Notification | None] = []
    for subject, key_id in subjects.items():
        outcome = keys[key_id]
        if outcome.payment_required and subject not in firing:
            notifications.append(fire_billing(key_id, outcome.first_payment_required_at, "traffic"))
        elif subject in firing and outcome.successes and not outcome.payment_required:
            notifications.append(resolve_billing(key_id))
    return notifications


def billing_rule() -> AlertRule | None:
    return AlertRule.objects.filter(kind=Kind.BILLING, enabled=True).first()


def fire_billing(key_id: int | None, first_seen: datetime | None, source: str) -> Notification | None:
    rule = billing_rule()
    if rule is None:
        return None
    alert = Alert.for_subject(rule, key_subject(key_id))
    first_seen = first_seen or timezone.now()
    label, context = billing_context(key_id, first_seen, source)
    return alert.fire(context, label=label)


def resolve_billing(key_id: int | None) -> Notification | None:
    alert = Alert.objects.filter(rule__kind=Kind.BILLING, subject=key_subject(key_id)).first()
    if alert is None:
        return None
    first_seen = (
        datetime.fromisoformat(alert.context["first_seen_iso"])
        if alert.context.get("first_seen_iso")
        else None
    )
    return alert.resolve({"failed_since": failed_since(key_id, first_seen)})


def billing_context(key_id: int | None, first_seen: datetime, source: str) -> tuple[str, dict[str, Any]]:
    """Key name, first 402, failed requests since, the page to open and any batch it interrupted."""
    key = TogetherKey.objects.filter(pk=key_id).first() if key_id is not None else None
    name = key.name if key else "(no upstream key)"
    context: dict[str, Any] = {
        "key_id": key_id,
        "key_name": name,
        "source": source,
        "first_seen": f"{first_seen:%Y-%m-%d %H:%M:%S} UTC",
        "first_seen_iso": first_seen.isoformat(),
        "failed_since": failed_since(key_id, first_seen),
        "path": reverse("dashboard-key", args=[key_id])
        if key_id is not None
        else reverse("dashboard-errors"),
    }
    context.update(_interrupted_batch(key_id))
    return f"key {name}", context


def failed_since(key_id: int | None, since: datetime | None) -> int:
    """402s on the key since the first one, from the minute rollups (never a scan of the raw logs)."""
    return 0 if since is None else billing_errors_since(key_id, since)


def _interrupted_batch(key_id: int | None) -> dict[str, Any]:
    batch = BatchJob.objects.interrupted_by_credits(key_id)
    if batch is None:
        return {}
    link = reverse("dashboard-batch-remainder", args=[batch.batch_id])
    return {
        "batch_id": batch.batch_id,
        "batch_remainder": batch.remainder_count,
        "batch_remainder_link": absolute(link),
    }


# ---- the other rules: evaluated periodically ---------------------------------------------------------


def billing_backstop(rule: AlertRule, now: datetime) -> Firing:
    """402s the hook missed (it failed, or its process died after commit), from the error groups."""
    groups = ErrorGroup.objects.seen_since("insufficient_credits", now - BACKSTOP_WINDOW)
    resolved = dict(rule.alerts.values_list("subject", "resolved_at"))
    seen = [(g.upstream_key_id, g.first_seen, g.last_seen, "traffic (backstop)") for g in groups]
    seen += _polled_402s()
    firing: Firing = {}
    for key_id, first_seen, last_seen, source in sorted(seen, key=lambda s: s[1]):
        subject = key_subject(key_id)
        resolved_at = resolved.get(subject)
        # A 402 older than the last recovery belongs to the outage that recovery ended, not a new one.
        if subject in firing or (resolved_at is not None and last_seen <= resolved_at):
            continue
        since = first_seen if resolved_at is None else max(first_seen, resolved_at)
        firing[subject] = billing_context(key_id, since, source)
    return firing


def _polled_402s() -> list[tuple[int | None, datetime, datetime, str]]:
    """Keys whose latest poll failed with a 402 (a poller's own billed call, e.g. a rate-limit probe)."""
    states = PollerKeyState.objects.failing_with("insufficient_credits")
    return [(s.key_id, s.last_error_at, s.last_error_at, f"poller {s.poller}") for s in states]


def key_invalid(rule: AlertRule, now: datetime) -> Firing:
    """Health check says invalid, or Together answered at least <threshold> 401s on a key in the window.

    Only 401s from Together on one of our upstream keys count: the proxy's refusal of a client's app key
    is app_key_rejected, and a 401 on no key of ours (a pass-through key we do not hold) names no key
    to verify or rotate here.
    """
    firing: Firing = {}
    for key in TogetherKey.objects.active_but_invalid():
        firing[key_subject(key.pk)] = _key_entry(key.pk, key.name, f"Health check: {key.health_detail}")
    recent = ErrorGroup.objects.seen_since("invalid_api_key", now - rule.window)
    for row in recent.filter(upstream_key__isnull=False).counts_by_key():
        if row["n"] >= rule.threshold and key_subject(row["upstream_key_id"]) not in firing:
            detail = f"{row['n']} requests answered 401 by Together within {rule.window_minutes} minutes"
            firing[key_subject(row["upstream_key_id"])] = _key_entry(
                row["upstream_key_id"], row["upstream_key__name"], detail
            )
    return firing


def _key_entry(key_id: int | None, name: str, detail: str) -> tuple[str, dict[str, Any]]:
    path = reverse("dashboard-key", args=[key_id]) if key_id is not None else reverse("keys-list")
    fix = "verify the key in the Together console, or rotate it (Keys page)."
    return f"key {name}", {"detail": detail, "fix": fix, "path": path, "key_id": key_id}


def app_key_rejected(rule: AlertRule, now: datetime) -> Firing:
    """At least <threshold> requests refused by the proxy for one app key (or unknown ones) in the window."""
    firing: Firing = {}
    for row in RequestLog.objects.app_key_rejections_since(now - rule.window, rule.threshold):
        key_id = row["app_key_id"]
        if key_id is None:
            subject, label = "appkey:unknown", "missing or unknown app keys"
            path = reverse("dashboard-errors") + f"?kind={APP_KEY_REJECTED}"
        else:
            subject, label = (
                f"appkey:{key_id}",
                f"app key {row['app_key__name']} (tdk_{row['app_key__prefix']}_…)",
            )
            path = reverse("keys-app-detail", args=[key_id])
        detail = (
            f"The proxy refused {row['n']} requests within {rule.window_minutes} minutes; they never"
            f" reached Together. Last reason: {row['message']}"
        )
        fix = (
            "give the client a valid app key (Keys page, or manage.py create_app_key NAME);"
            " the Together key is fine."
        )
        firing[subject] = (label, {"detail": detail, "fix": fix, "path": path, "app_key_id": key_id})
    return firing


def headroom(rule: AlertRule, now: datetime) -> Firing:
    """Every snapshot of the window below the threshold (a single dip is not an alert)."""
    firing: Firing = {}
    for row in RateLimitSnapshot.objects.best_headroom_since(now - rule.window):
        if row["best"] < rule.threshold:
            model = row["model"] or "all models"
            detail = f"Headroom at most {row['best']:.1f}% for {rule.window_minutes} minutes ({model})."
            fix = "smooth the traffic, spread it over more keys, or use the batch API."
            firing[f"key:{row['key_id']}:{row['model']}"] = (
                f"key {row['key__name']} · {model}",
                {"detail": detail, "fix": fix, "path": reverse("dashboard-key", args=[row["key_id"]])},
            )
    return firing


def error_rate(rule: AlertRule, now: datetime) -> Firing:
    """A category's share of requests above the threshold (percent) over the window, from rollups.

    Requests the proxy refused for their app key are left out: they never reached Together, and
    app_key_rejected has its own alert about them.
    """
    since = (now - rule.window).replace(second=0, microsecond=0)  # the rollups' minute
    totals = minute_totals_since(since)
    refused = sum(row["n"] for row in RequestLog.objects.app_key_rejections_since(since, 1))
    requests = totals.requests - refused
    if requests < MIN_REQUESTS_FOR_RATE:
        return {}
    firing: Firing = {}
    for category, errors in totals.errors_by_category.items():
        if category in OWN_ALERT:
            continue
        errors = max(0, (errors or 0) - (refused if category == "auth" else 0))
        share = 100.0 * errors / requests
        if share > rule.threshold:
            detail = (
                f"{share:.1f}% of {requests} requests failed with {category} errors"
                f" in {rule.window_minutes} min."
            )
            firing[f"category:{category}"] = (
                f"{category} errors {share:.0f}%",
                {"detail": detail, "path": reverse("dashboard-errors") + f"?category={category}"},
            )
    return firing


def finetune_failed(rule: AlertRule, now: datetime) -> Firing:
    jobs = FineTuneJob.objects.failed_since(now - rule.window)
    return {
        f"finetune:{job.job_id}": _job_entry(job, f"Status {job.status}: {job.error_message}") for job in jobs
    }


def finetune_stuck(rule: AlertRule, now: datetime) -> Firing:
    threshold = timedelta(minutes=rule.threshold)
    jobs = FineTuneJob.objects.waiting_too_long(now, threshold)
    return {
        f"finetune:{job.job_id}": _job_entry(
            job, f"{job.status} since {job.status_changed_at:%Y-%m-%d %H:%M} UTC"
        )
        for job in jobs
    }


def _job_entry(job: FineTuneJob, detail: str) -> tuple[str, dict[str, Any]]:
    path = reverse("dashboard-finetune", args=[job.job_id])
    return f"fine-tune {job.job_id}", {"detail": detail, "path": path, "base_model": job.base_model}


def batch_failed(rule: AlertRule, now: datetime) -> Firing:
    firing: Firing = {}
    for batch in BatchJob.objects.failed_since(now - rule.window):
        detail = f"Status {batch.status}. {batch.error}".strip()
        context: dict[str, Any] = {"detail": detail, "path": reverse("dashboard-batches")}
        if batch.remainder_count:
            link = absolute(reverse("dashboard-batch-remainder", args=[batch.batch_id]))
            context["fix"] = f"resubmit the {batch.remainder_count} requests without output: {link}"
        firing[f"batch:{batch.batch_id}"] = (f"batch {batch.batch_id}", context)
    return firing


def model_removed(rule: AlertRule, now: datetime) -> Firing:
    firing: Firing = {}
    for model in ModelInfo.objects.removed_in_use_since(now - rule.window):
        fix = f"switch to {model.successor}." if model.successor else "pick another model from the catalog."
        detail = (
            f"Removed at {model.removed_at:%Y-%m-%d %H:%M} UTC;"
            f" our traffic last used it {model.last_used_at:%Y-%m-%d %H:%M} UTC."
        )
        firing[f"model:{model.model_id}"] = (
            f"model {model.model_id}",
            {"detail": detail, "fix": fix, "path": reverse("dashboard-models")},
        )
    return firing


def poller_stale(rule: AlertRule, now: datetime) -> Firing:
    firing: Firing = {}
    for beat in stale_pollers(now):
        since = f"{beat.silent_since:%Y-%m-%d %H:%M:%S} UTC"
        detail = f"No successful run since {since} (every {beat.interval_seconds}s)."
        if beat.last_error:
            detail += f" Last error: {beat.last_error}"
        fix = "check that the Celery worker and beat are running (make run starts both)."
        firing[f"poller:{beat.name}"] = (f"poller {beat.name}", {"detail": detail, "fix": fix})
    return firing


def logs_dropped(rule: AlertRule, now: datetime) -> Firing:
    """The proxy's cumulative dropped count grew by at least <threshold> within the window."""
    current = dropped_logs_total()
    memory = rule.memory or {}
    seen = int(memory.get("seen", current))
    if current != seen or "seen" not in memory:
        changed = {"seen": current, "grew": current - seen, "at": now.isoformat()}
        AlertRule.objects.filter(pk=rule.pk).update(memory=changed)
        memory = changed
    grew_at = datetime.fromisoformat(memory["at"])
    if memory.get("grew", 0) < rule.threshold or now - grew_at > rule.window:
        return {}
    detail = f"The proxy dropped {memory['grew']} request logs (database unavailable or buffer full)."
    fix = "check the database; dropped logs are gone, the requests themselves were served."
    return {"proxy": ("proxy request logs", {"detail": detail, "fix": fix})}


def unpriced_model(rule: AlertRule, now: datetime) -> Firing:
    """Models our traffic used within the window whose requests have token counts but no price."""
    firing: Firing = {}
    for model, count in unpriced_models_since(now - rule.window).items():
        if count < rule.threshold:
            continue
        detail = (
            f"{count} requests within {rule.window_minutes} minutes have no cost: the catalog has no price"
            " for this model, so every cost shown leaves them out."
        )
        fix = (
            "nothing to do for a model Together prices later: costs are filled in when its price is polled."
            " A private or fine-tuned model is not in the catalog: read its cost in Together's billing usage."
        )
        firing[f"model:{model}"] = (
            f"model {model}",
            {"detail": detail, "fix": fix, "path": reverse("dashboard-models"), "model": model},
        )
    return firing


# ---- dedicated endpoints: thresholds in minutes ------------------------------------------------------


def _threshold(rule: AlertRule) -> timedelta:
    return timedelta(minutes=max(0.0, rule.threshold))


def _endpoint_entry(
    usage: EndpointUsage, detail: str, fix: str, unseen_for: timedelta | None
) -> tuple[str, dict[str, Any]]:
    endpoint = usage.endpoint
    per_hour = usage.price_per_hour
    if per_hour is not None:
        running = f"{endpoint.hardware} x {endpoint.replicas}"
        detail += f" It bills ${per_hour:.2f} an hour while STARTED ({running})."
    if unseen_for is not None:
        detail += (
            f" Last seen by poll_endpoints {duration_text(unseen_for.total_seconds())} ago"
            " (its key's polls fail): its state may have changed since."
        )
    context = {
        "detail": detail,
        "fix": fix,
        "path": reverse("endpoints-detail", args=[endpoint.endpoint_id]),
        "endpoint_id": endpoint.endpoint_id,
        "endpoint_name": endpoint.name,
        "per_hour_usd": None if per_hour is None else f"{per_hour:.2f}",
        "cost_today_usd": None if usage.cost is None else f"{usage.cost:.2f}",
    }
    return f"endpoint {endpoint.name}", context


def _endpoints_firing(
    endpoints: Iterable[Endpoint], now: datetime, describe: Callable[[Endpoint], str], fix: str
) -> Firing:
    """One subject per endpoint: the detail `describe` writes, what it bills, and the fix ({id}: its id)."""
    endpoints = list(endpoints)
    if not endpoints:
        return {}
    # A state older than two poll intervals is said to be so: alerting on it is still the safe side.
    fresh = timedelta(seconds=2 * interval_for(ENDPOINTS_POLLER))
    firing: Firing = {}
    for usage in usage_today(endpoints, now):
        endpoint_id = usage.endpoint.endpoint_id
        unseen = now - usage.endpoint.last_seen
        stale = unseen if unseen > fresh else None
        entry = _endpoint_entry(usage, describe(usage.endpoint), fix.replace("{id}", endpoint_id), stale)
        firing[f"endpoint:{endpoint_id}"] = entry
    return firing


def endpoint_idle(rule: AlertRule, now: datetime) -> Firing:
    """STARTED for at least <threshold> minutes with no request recorded to it within them."""
    quiet = _threshold(rule)
    started = list(Endpoint.objects.in_state_since((EndpointState.STARTED,), now - quiet))
    seen = requests_since([e.name for e in started], now - quiet, now)
    return _endpoints_firing(
        [e for e in started if not seen.get(e.name)],
        now,
        lambda e: (
            f"STARTED since {e.state_since:%Y-%m-%d %H:%M} UTC with no request recorded to {e.name}"
            f" in the last {duration_text(quiet.total_seconds())}."
        ),
        'stop it (PATCH /v1/endpoints/{id} with {"state": "STOPPED"}) or set an inactive_timeout;'
        " if its traffic bypasses the dashboard, send it through the proxy or the ingest API.",
    )


def endpoint_no_timeout(rule: AlertRule, now: datetime) -> Firing:
    """STARTED for more than <threshold> minutes with no inactive_timeout."""
    started = Endpoint.objects.in_state_since((EndpointState.STARTED,), now - _threshold(rule))
    return _endpoints_firing(
        started.filter(inactive_timeout__isnull=True),
        now,
        lambda e: f"{e.name} has no inactive_timeout: it never stops by itself.",
        'set one: PATCH /v1/endpoints/{id} with {"inactive_timeout": 60} (minutes).',
    )


def endpoint_error(rule: AlertRule, now: datetime) -> Firing:
    """In ERROR for more than <threshold> minutes."""
    return _endpoints_firing(
        Endpoint.objects.in_state_since((EndpointState.ERROR,), now - _threshold(rule)),
        now,
        lambda e: f"{e.name} has been in ERROR since {e.state_since:%Y-%m-%d %H:%M} UTC.",
        "check the hardware's availability (GET /v1/hardware?model=...), then restart it"
        " or use other hardware.",
    )


def endpoint_slow_start(rule: AlertRule, now: datetime) -> Firing:
    """PENDING or STARTING for more than <threshold> minutes in a row."""

    def describe(endpoint: Endpoint) -> str:
        since = endpoint.booting_since or endpoint.state_since
        waited = duration_text((now - since).total_seconds())
        return (
            f"{endpoint.name} has been starting ({endpoint.state})"
            f" since {since:%Y-%m-%d %H:%M} UTC, {waited}."
        )

    return _endpoints_firing(
        Endpoint.objects.listed().filter(state__in=BOOTING, booting_since__lte=now - _threshold(rule)),
        now,
        describe,
        "the hardware may be short: check its availability, or stop it and start it on other hardware.",
    )


def budget(rule: AlertRule, now: datetime) -> Firing:
    """Each budget's thresholds reached in its current period, one subject per threshold and period.

    When several are reached at once (the spend went from 50% to 120% between two evaluations) only the
    highest speaks, so a budget at 100% alerts once per channel; a lower one already firing stays so.
    The next period's subjects are new, so the last period's resolve and each threshold can speak again.
    """
    firing: Firing = {}
    already = set(rule.alerts.filter(state=Alert.State.FIRING).values_list("subject", flat=True))
    for status in budget_statuses(now):
        reached = status.reached
        for threshold in reached:
            subject = budget_subject(status, threshold)
            if threshold == reached[-1] or subject in already:
                firing[subject] = _budget_entry(status, threshold)
    return firing


def budget_subject(status: BudgetStatus, threshold: int) -> str:
    return f"budget:{status.budget.pk}:{threshold}:{status.period_key}"


def _budget_entry(status: BudgetStatus, threshold: int) -> tuple[str, dict[str, Any]]:
    budget, spend = status.budget, status.spend
    period = "day" if budget.period == Budget.Period.DAY else "month"
    detail = (
        f"Budget {budget.name} ({budget.target_label}, ${format_usd(budget.amount_usd)} per {period},"
        f" UTC): ${format_usd(spend.cost_usd)} spent since {status.period_start:%Y-%m-%d %H:%M} UTC,"
        f" {status.percent}% of it, past its {threshold}% threshold."
        f" It resets at {status.resets_at:%Y-%m-%d %H:%M} UTC."
    )
    if spend.is_lower_bound:
        detail += (
            f" That is a lower bound: {spend.unpriced_requests} requests had no price in the catalog and"
            " are not counted."
        )
    if budget.enforce:
        detail += (
            " Enforced: the proxy refuses the app key with HTTP 429 until the reset."
            if status.is_over
            else " Enforced: at 100% the proxy refuses the app key with HTTP 429 until the reset."
        )
    fix = "raise the budget on the Budgets page if this spend is expected, else find what spends it."
    context = {
        "detail": detail,
        "fix": fix,
        "path": reverse("budgets-list"),
        "budget_id": budget.pk,
        "threshold": threshold,
        "spent_usd": str(spend.cost_usd),
        "amount_usd": str(budget.amount_usd),
        "resets_at": status.resets_at.isoformat(),
    }
    return f"budget {budget.name} at {threshold}%", context


ANOMALY_BASELINE_DAYS = 7


def spend_anomaly(rule: AlertRule, now: datetime) -> Firing:
    """Spend in the window over <threshold> times the same window's average of the 7 days before.

    Per upstream key and model, from the rollups (edges older than the minute rollups' retention are
    read from whole hours). Below SPEND_ANOMALY_MIN_USD in the window nothing fires, so tiny spend never
    pages; a key and model with no spend in the baseline fires from that minimum on.
    """
    minimum = settings.SPEND_ANOMALY_MIN_USD
    start = now - rule.window
    current = {
        place: sums
        for place, sums in spend_by_key_and_model(start, now).items()
        if sums["cost_usd"] >= minimum
    }
    if not current:
        return {}
    baseline: dict[tuple[int | None, str], Decimal] = {}
    for days in range(1, ANOMALY_BASELINE_DAYS + 1):
        for place, sums in spend_by_key_and_model(start - days * DAY, now - days * DAY).items():
            baseline[place] = baseline.get(place, Decimal(0)) + sums["cost_usd"]
    names = dict(TogetherKey.objects.filter(pk__in=[k for k, _ in current if k]).values_list("pk", "name"))
    firing: Firing = {}
    for (key_id, model), sums in current.items():
        average = baseline.get((key_id, model), Decimal(0)) / ANOMALY_BASELINE_DAYS
        if sums["cost_usd"] <= average * Decimal(str(rule.threshold)):
            continue
        firing[f"spend:{key_id or '-'}:{model[:180]}"] = _anomaly_entry(
            rule, key_id, names.get(key_id, "(no upstream key)"), model, sums, average
        )
    return firing


def _anomaly_entry(
    rule: AlertRule, key_id: int | None, key_name: str, model: str, sums: dict[str, Any], average: Decimal
) -> tuple[str, dict[str, Any]]:
    model_label = model or "(no model)"
    detail = (
        f"${format_usd(sums['cost_usd'])} spent on {model_label} with the key {key_name} in the last"
        f" {rule.window_minutes} minutes, against ${format_usd(average)} on average in the same window of the"
        f" last {ANOMALY_BASELINE_DAYS} days (alert above {rule.threshold:g}x)."
    )
    if sums["unpriced_requests"]:
        detail += f" At least: {sums['unpriced_requests']} requests had no price and are not counted."
    fix = "look for a runaway client or a retry loop on the Requests page; set a budget to cap an app key."
    query = {"key": key_id, "model": model} if key_id else {"model": model}
    path = reverse("dashboard-requests") + "?" + urlencode(query)
    context = {"detail": detail, "fix": fix, "path": path, "key_id": key_id, "model": model}
    return f"spend {key_name} · {model_label}", context


EVALUATORS: dict[str, Callable[[AlertRule, datetime], Firing]] = {
    Kind.BILLING: billing_backstop,
    Kind.KEY_INVALID: key_invalid,
    Kind.HEADROOM: headroom,
    Kind.ERROR_RATE: error_rate,
    Kind.FINETUNE_FAILED: finetune_failed,
    Kind.FINETUNE_STUCK: finetune_stuck,
    Kind.BATCH_FAILED: batch_failed,
    Kind.MODEL_REMOVED: model_removed,
    Kind.POLLER_STALE: poller_stale,
    Kind.LOGS_DROPPED: logs_dropped,
    Kind.APP_KEY_REJECTED: app_key_rejected,
    Kind.UNPRICED_MODEL: unpriced_model,
    Kind.ENDPOINT_IDLE: endpoint_idle,
    Kind.ENDPOINT_NO_TIMEOUT: endpoint_no_timeout,
    Kind.ENDPOINT_ERROR: endpoint_error,
    Kind.ENDPOINT_SLOW_START: endpoint_slow_start,
    Kind.BUDGET: budget,
    Kind.SPEND_ANOMALY: spend_anomaly,
}
# Billing resolves on a successful call (on_recorded), not because a poll stopped seeing the 402.
RESOLVED_ELSEWHERE = {Kind.BILLING}


def apply_rule(rule: AlertRule, firing: Firing, now: datetime) -> list[Notification | None]:
    """Fire the subjects that are firing, resolve the ones that stopped."""
    notifications: list[Notification | None] = []
    already = {a.subject: a for a in rule.alerts.filter(state=Alert.State.FIRING)}
    for subject, (label, context) in firing.items():
        if subject not in already:
            notifications.append(Alert.for_subject(rule, subject).fire(context, label=label, now=now))
    if rule.kind not in RESOLVED_ELSEWHERE:
        for subject, alert in already.items():
            if subject not in firing:
                notifications.append(alert.resolve(now=now))
    return notifications


def renotify_due(now: datetime) -> list[Notification | None]:
    """Reminders for alerts still firing past their rule's renotify interval."""
    firing = Alert.objects.filter(state=Alert.State.FIRING, rule__enabled=True, rule__renotify_minutes__gt=0)
    due = [alert for alert in firing.select_related("rule") if alert.is_renotify_due(now)]
    return [alert.renotify_if_due(now, context=_fresh_counts(alert)) for alert in due]


def _fresh_counts(alert: Alert) -> dict[str, Any]:
    """A billing reminder tells how many requests failed so far, not how many had when it fired."""
    if alert.rule.kind != Kind.BILLING or not alert.context.get("first_seen_iso"):
        return {}
    first_seen = datetime.fromisoformat(alert.context["first_seen_iso"])
    return {"failed_since": failed_since(alert.context.get("key_id"), first_seen)}


def evaluate_rules(now: datetime | None = None) -> list[Notification | None]:
    """Evaluate every enabled rule and the reminders; returns the notifications written (None: nothing)."""
    now = now or timezone.now()
    notifications: list[Notification | None] = []
    for rule in AlertRule.objects.filter(enabled=True):
        try:
            notifications += apply_rule(rule, EVALUATORS[rule.kind](rule, now), now)
        except Exception:
            # One broken rule must not silence the others.
            logger.exception("alert rule %s failed to evaluate", rule.kind)
    notifications += renotify_due(now)
    return notifications
