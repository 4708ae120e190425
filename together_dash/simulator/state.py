"""Everything the simulator remembers between requests, and the scenario that shapes it."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from together_dash.simulator import catalog
from together_dash.simulator.batches import BatchStore
from together_dash.simulator.billing import Charge, UsageLedger
from together_dash.simulator.clock import SimClock
from together_dash.simulator.endpoints import EndpointStore
from together_dash.simulator.files import FileStore
from together_dash.simulator.finetunes import FineTuneStore
from together_dash.simulator.inference import PromptCache
from together_dash.simulator.ratelimits import KeyBudget, RateLimiter
from together_dash.simulator.scenario import Scenario
from together_dash.simulator.wire import dumps

ORGANIZATION = {
    "organization_id": "org_2hJ8kQ4mN7pR1sT5vW9yB3",
    "organization_name": "Simulated Org",
    "project_id": "proj_5Xc7Vb2Nm4Lk8Jh1Gf3Ds6",
    "project_name": "Default Project",
    "project_slug": "simulated-org",
}


def other_organization(organization_id: str) -> dict[str, str]:
    """The whoami facts of an organisation a scenario names (`key_organizations`): derived from its id."""
    digest = hashlib.sha256(organization_id.encode()).hexdigest()
    return {
        "organization_id": organization_id,
        "organization_name": f"Simulated Org {organization_id}",
        "project_id": f"proj_{digest[:22]}",
        "project_name": "Default Project",
        "project_slug": f"simulated-{digest[:8]}",
    }


class SimulatorState:
    """Files, jobs, batches, endpoints, credits, the bill, revoked keys, rate budgets; reset() clears all."""

    organization_id = ORGANIZATION["organization_id"]
    project_id = ORGANIZATION["project_id"]
    project_slug = ORGANIZATION["project_slug"]

    def __init__(self, scenario: Scenario | None = None, clock: SimClock | None = None) -> None:
        self.clock = clock or SimClock()
        self.base_scenario = scenario or Scenario()
        self.limiter = RateLimiter()
        self.reset()

    def reset(self, scenario: Scenario | None = None) -> None:
        """Forget everything and start over with `scenario` (the startup scenario when None)."""
        self.clock.reset()
        self.files = FileStore()
        self.finetunes = FineTuneStore()
        self.batches = BatchStore()
        self.endpoints = EndpointStore()
        # The bill of each organisation, by its id; calls bill the organisation of their key.
        self.ledgers: dict[str, UsageLedger] = {}
        self.prompt_cache = PromptCache()
        self.revoked: set[str] = set()
        self.limiter.clear()
        self.billed_calls = 0
        self.apply_scenario(scenario or self.base_scenario)

    def apply_scenario(self, scenario: Scenario, changed: set[str] | None = None) -> None:
        """Make `scenario` active; deadlines and credits restart for the fields in `changed` (None: all)."""
        now = self.clock.now()
        old = getattr(self, "scenario", None)
        self.scenario = scenario
        self.accepted_keys = frozenset(scenario.keys) if scenario.keys is not None else None
        if changed is None or "credits_after_calls" in changed:
            self.credits_remaining = scenario.credits_after_calls
        if changed is None or "remove_models" in changed:
            self.remove_at = {model: now + after for model, after in scenario.remove_models.items()}
        if changed is None or "revoke_keys" in changed:
            self.revoke_at = {key: now + after for key, after in scenario.revoke_keys.items()}
        if old is not None and (
            old.rate_limit != scenario.rate_limit or old.key_rate_limits != scenario.key_rate_limits
        ):
            self.limiter.clear()
        self._models_json: tuple[frozenset[str], bytes] | None = None

    # --- keys -----------------------------------------------------------------------------------
    def key_accepted(self, key: str) -> bool:
        if not key or key in self.revoked:
            return False
        if self.accepted_keys is not None and key not in self.accepted_keys:
            return False
        if self.revoke_at:
            at = self.revoke_at.get(key)
            if at is not None and self.clock.now() >= at:
                return False
        return True

    def organization_of(self, key: str) -> str:
        """The id of the organisation a key belongs to (scenario `key_organizations`, else the default)."""
        return self.scenario.key_organizations.get(key, self.organization_id)

    def _organization(self, key: str) -> dict[str, str]:
        organization_id = self.organization_of(key)
        if organization_id == self.organization_id:
            return ORGANIZATION
        return other_organization(organization_id)

    def whoami(self, key: str) -> dict[str, Any]:
        digest = hashlib.sha256(key.encode()).hexdigest()
        org = self._organization(key)
        return {"api_key_id": f"key_{digest[:24]}", **org, "user_id": f"user_{digest[24:48]}"}

    def whoami_v3(self, key: str) -> dict[str, Any]:
        """together 3.x's tagged whoami: a project key, or an org key (scenario `org_keys`)."""
        digest = hashlib.sha256(key.encode()).hexdigest()
        org = self._organization(key)
        answer: dict[str, Any] = {
            "type": "project_api_key",
            "api_key": {"id": f"key_{digest[:24]}"},
            "organization": {"id": org["organization_id"], "name": org["organization_name"]},
            "project": {"id": org["project_id"], "name": org["project_name"], "slug": org["project_slug"]},
        }
        if key in self.scenario.org_keys:
            answer["type"] = "org_api_key"
            del answer["project"]
        return answer

    def user_slug(self, key: str) -> str:
        return f"simuser-{hashlib.sha256(key.encode()).hexdigest()[:8]}"

    def budget(self, key: str, now: float) -> KeyBudget:
        return self.limiter.budget(key, self.scenario.rate_limit_for(key), now)

    # --- models ---------------------------------------------------------------------------------
    def removed_models(self) -> frozenset[str]:
        if not self.remove_at:
            return frozenset()
        now = self.clock.now()
        return frozenset(model for model, at in self.remove_at.items() if now >= at)

    def model(self, model_id: str) -> catalog.CatalogModel | None:
        """The catalog entry, unless unknown or removed by the scenario."""
        entry = catalog.BY_ID.get(model_id)
        if entry is None or (self.remove_at and model_id in self.removed_models()):
            return None
        return entry

    def models_json(self) -> bytes:
        """GET /models, rendered once per catalog state (it only changes when a model is removed)."""
        removed = self.removed_models()
        cached = self._models_json
        if cached is None or cached[0] != removed:
            body = dumps([m.to_json() for m in catalog.MODELS if m.id not in removed])
            cached = self._models_json = (removed, body)
        return cached[1]

    # --- credits --------------------------------------------------------------------------------
    def has_credit(self) -> bool:
        return self.credits_remaining is None or self.credits_remaining > 0

    def ledger(self, organization_id: str) -> UsageLedger:
        """The bill of one organisation (empty until one of its keys is billed)."""
        return self.ledgers.setdefault(organization_id, UsageLedger())

    def bill(self, charges: Iterable[Charge] = (), organization_id: str | None = None) -> None:
        """Count a billed call and put its charges on its organisation's bill, in the current hour."""
        self.ledger(organization_id or self.organization_id).record(self.clock.now(), charges)
        self.billed_calls += 1
        if self.credits_remaining is not None:
            self.credits_remaining = max(0, self.credits_remaining - 1)

    def summary(self) -> dict[str, Any]:
        return {
            "now": self.clock.now(),
            "clock_frozen": self.clock.frozen,
            "credits_remaining": self.credits_remaining,
            "billed_calls": self.billed_calls,
            "revoked_keys": sorted(self.revoked),
            "removed_models": sorted(self.removed_models()),
            "files": len(self.files.files),
            "fine_tunes": len(self.finetunes.jobs),
            "batches": len(self.batches.batches),
            "endpoints": len(self.endpoints.endpoints),
            "scenario": self.scenario.to_dict(),
        }
