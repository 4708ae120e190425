"""check_keys: GET /models and /whoami per key (neither is billed) and write each key's health."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.utils import timezone

from together_dash.keys.models import TogetherKey
from together_dash.pollers.fanout import FanOutConfig, KeyOutcome, KeyRef, fan_out, key_refs
from together_dash.pollers.runs import PollReport, active_keys, keys_due, record_outcomes, run_poller
from together_dash.together.client import AsyncTogetherClient, TogetherAPIError
from together_dash.together.redact import redact
from together_dash.together.types import WhoAmI

POLLER = "check_keys"


@dataclass(frozen=True, slots=True)
class KeyCheck:
    """A key Together accepted: how many models it sees and, when /whoami answered, whose it is."""

    models: int
    whoami: WhoAmI | None


def check_keys(token: str | None = None, config: FanOutConfig | None = None) -> PollReport:
    """Check every active key's health."""
    return run_poller(POLLER, lambda report: _poll(report, config), token)


def _poll(report: PollReport, config: FanOutConfig | None) -> None:
    now = timezone.now()
    keys, report.skipped = keys_due(POLLER, active_keys(), now)
    refs, broken = key_refs(keys)
    outcomes = broken + fan_out(refs, _check, config)
    record_outcomes(POLLER, outcomes, report)
    for outcome in outcomes:
        health = write_health(outcome, now)
        report.count(health)


async def _check(client: AsyncTogetherClient, key: KeyRef) -> KeyCheck:
    models = await client.list_models()
    try:
        whoami: WhoAmI | None = (await client.whoami()).data
    except TogetherAPIError:
        whoami = None  # older accounts or API versions without /whoami: the key is still good
    return KeyCheck(models=len(models.data), whoami=whoami)


def health_of(outcome: KeyOutcome[KeyCheck]) -> tuple[str, str]:
    """(health, detail): 200 healthy, 401 invalid, anything else (network, 5xx, 429) unknown."""
    if outcome.ok and outcome.value is not None:
        return TogetherKey.Health.HEALTHY, f"{outcome.value.models} models visible"
    error = outcome.error
    assert error is not None
    message = redact(error.message, (outcome.key.secret,))
    if error.kind == "invalid_api_key":
        return TogetherKey.Health.INVALID, message[:300]
    return TogetherKey.Health.UNKNOWN, f"{error.kind}: {message}"[:300]


def write_health(outcome: KeyOutcome[KeyCheck], now: datetime) -> str:
    health, detail = health_of(outcome)
    values: dict[str, object] = {"health": health, "health_checked_at": now, "health_detail": detail}
    whoami = outcome.value.whoami if outcome.ok and outcome.value is not None else None
    # Names are kept when /whoami did not answer: an outage does not make the organization unknown.
    if whoami is not None:
        values["organization_name"] = (whoami.organization_name or "")[:200]
        values["project_name"] = (whoami.project_name or "")[:200]
    TogetherKey.objects.filter(pk=outcome.key.id, status=TogetherKey.Status.ACTIVE).update(**values)
    return health
