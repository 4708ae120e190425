"""Scenarios: the knobs that shape a whole simulator run (keys, latency, credits, outages, job speed).

A scenario is plain JSON, loaded from a file (`--scenario FILE`) or posted to `/_sim/scenario` and
`/_sim/reset`. Unknown keys are an error, so a typo never silently does nothing. Example:

    {
      "keys": ["k1", "k2", "k3"],
      "org_keys": ["k2"],
      "key_organizations": {"k3": "org_other"},
      "billing_denied_keys": ["k2"],
      "billing_page_size": 2,
      "latency_ms": 100,
      "credits_after_calls": 50,
      "remove_models": {"Qwen/QwQ-32B-Preview": 30},
      "revoke_keys": {"k2": 60},
      "rate_limit": {"requests": 600, "tokens": 1000000, "window_s": 60},
      "key_rate_limits": {"k1": {"requests": 5, "tokens": 10000, "window_s": 1}},
      "finetune_failure": {"status": "user_error", "at_progress": 0.5, "message": "..."},
      "job_speed": 10,
      "batch_lines_per_s": 20,
      "timeout_s": 120
    }

Times in `remove_models` / `revoke_keys` are seconds after the scenario is applied. A key named in
`key_organizations` belongs to that organisation (its whoami, its bill); every other key to the default
one. `billing_denied_keys` get 403 from the billing report (a key without billing permission), and
`billing_page_size` caps the report's windows per page, whatever `limit` asks for.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A per-key budget: `requests` and `tokens` per window of `window_s` seconds."""

    requests: int = 1_000_000  # default generous, so benchmarks never meet it
    tokens: int = 10_000_000_000  # 800 streams of 50 MB a minute
    window_s: float = 60.0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RateLimit:
        _reject_unknown(cls, data, "rate limit")
        limit = cls(**data)
        if limit.requests < 0 or limit.tokens < 0 or limit.window_s <= 0:
            raise ValueError(f"invalid rate limit: {data!r}")
        return limit


FINETUNE_FAILURE_STATUSES = ("error", "user_error")


@dataclass(frozen=True, slots=True)
class Scenario:
    keys: tuple[str, ...] | None = None  # accepted API keys; None accepts any non-empty key
    org_keys: tuple[str, ...] = ()  # keys that are organisation keys (no project) in /v3/whoami
    key_organizations: dict[str, str] = field(default_factory=dict)  # key -> organisation id
    billing_denied_keys: tuple[str, ...] = ()  # keys the billing report refuses (403)
    billing_page_size: int | None = None  # at most this many windows per billing report page
    latency_ms: float = 0.0  # added to every /v1 response
    timeout_s: float = 120.0  # how long `X-Simulate: timeout` hangs before giving up with a 504
    job_speed: float = 1.0  # fine-tunes and batches progress this many times faster than the default pace
    batch_lines_per_s: float = 20.0  # batch lines processed per second at job_speed 1
    credits_after_calls: int | None = None  # billed calls before every billed call answers 402
    remove_models: dict[str, float] = field(default_factory=dict)
    revoke_keys: dict[str, float] = field(default_factory=dict)
    rate_limit: RateLimit = field(default_factory=RateLimit)
    key_rate_limits: dict[str, RateLimit] = field(default_factory=dict)
    finetune_failure: dict[str, Any] | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any], base: Scenario | None = None) -> Scenario:
        """Build a scenario from JSON-shaped data, on top of `base` (defaults when None)."""
        if not isinstance(data, dict):
            raise ValueError("a scenario must be a JSON object")
        _reject_unknown(cls, data, "scenario")
        changes = dict(data)
        if changes.get("keys") is not None:
            changes["keys"] = tuple(str(key) for key in changes["keys"])
        for name in ("org_keys", "billing_denied_keys"):
            if name in changes:
                changes[name] = tuple(str(key) for key in changes[name] or ())
        if "key_organizations" in changes:
            changes["key_organizations"] = {
                str(key): str(org) for key, org in (changes["key_organizations"] or {}).items()
            }
        if "rate_limit" in changes:
            changes["rate_limit"] = RateLimit.from_dict(changes["rate_limit"] or {})
        if "key_rate_limits" in changes:
            changes["key_rate_limits"] = {
                key: RateLimit.from_dict(value) for key, value in (changes["key_rate_limits"] or {}).items()
            }
        for name in ("remove_models", "revoke_keys"):
            if name in changes:
                changes[name] = {str(k): float(v) for k, v in (changes[name] or {}).items()}
        scenario = replace(base or cls(), **changes)
        scenario.validate()
        return scenario

    def validate(self) -> None:
        if self.job_speed <= 0 or self.batch_lines_per_s <= 0:
            raise ValueError("job_speed and batch_lines_per_s must be positive")
        if self.latency_ms < 0 or self.timeout_s < 0:
            raise ValueError("latency_ms and timeout_s must not be negative")
        if self.credits_after_calls is not None and self.credits_after_calls < 0:
            raise ValueError("credits_after_calls must not be negative")
        if self.billing_page_size is not None and self.billing_page_size < 1:
            raise ValueError("billing_page_size must be at least 1")
        if any(not org for org in self.key_organizations.values()):
            raise ValueError("key_organizations values must be organisation ids")
        failure = self.finetune_failure
        if failure is not None:
            if failure.get("status", "error") not in FINETUNE_FAILURE_STATUSES:
                raise ValueError(f"finetune_failure.status must be one of {FINETUNE_FAILURE_STATUSES}")
            if not 0 <= float(failure.get("at_progress", 0.5)) <= 1:
                raise ValueError("finetune_failure.at_progress must be between 0 and 1")

    def rate_limit_for(self, key: str) -> RateLimit:
        return self.key_rate_limits.get(key, self.rate_limit)

    def to_dict(self) -> dict[str, Any]:
        return {
            "keys": list(self.keys) if self.keys is not None else None,
            "org_keys": list(self.org_keys),
            "key_organizations": dict(self.key_organizations),
            "billing_denied_keys": list(self.billing_denied_keys),
            "billing_page_size": self.billing_page_size,
            "latency_ms": self.latency_ms,
            "timeout_s": self.timeout_s,
            "job_speed": self.job_speed,
            "batch_lines_per_s": self.batch_lines_per_s,
            "credits_after_calls": self.credits_after_calls,
            "remove_models": dict(self.remove_models),
            "revoke_keys": dict(self.revoke_keys),
            "rate_limit": _limit_dict(self.rate_limit),
            "key_rate_limits": {key: _limit_dict(limit) for key, limit in self.key_rate_limits.items()},
            "finetune_failure": self.finetune_failure,
        }


def load_scenario(path: str | Path) -> Scenario:
    """Read a scenario JSON file."""
    return Scenario.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def _limit_dict(limit: RateLimit) -> dict[str, Any]:
    return {"requests": limit.requests, "tokens": limit.tokens, "window_s": limit.window_s}


def _reject_unknown(cls: type, data: dict[str, Any], what: str) -> None:
    unknown = set(data) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(f"unknown {what} field(s): {', '.join(sorted(unknown))}")
