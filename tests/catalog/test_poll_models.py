"""poll_models against the simulator: the catalog, its diff, removed models, and failing keys."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from together_dash.catalog.models import ModelChange, ModelInfo
from together_dash.catalog.polling import poll_models
from together_dash.pollers.models import PollerHeartbeat, PollerKeyState
from together_dash.pollers.testing import add_key, fault_for_key
from together_dash.simulator import catalog
from together_dash.simulator.testing import RunningSimulator
from together_dash.traffic.models import RequestLog

pytestmark = pytest.mark.django_db

LLAMA_70B = "meta-llama/Llama-3.3-70B-Instruct-Turbo"
OLD_LLAMA = "meta-llama/Meta-Llama-3.1-70B-Instruct-Turbo"
NEWEST_BIG_LLAMA = "meta-llama/Llama-4-Maverick-17B-128E-Instruct-FP8"


def _catalog_state() -> list[tuple[object, ...]]:
    fields = (
        "model_id",
        "state",
        "context_length",
        "pricing_input",
        "pricing_output",
        "successor",
        "removed_at",
    )
    return list(ModelInfo.objects.order_by("model_id").values_list(*fields))


def _remove_from_upstream(together: RunningSimulator, model_id: str) -> None:
    together.freeze_clock()
    together.set_scenario(remove_models={model_id: 10})
    together.advance(11)


def test_the_first_poll_fills_the_catalog_as_a_baseline(together: RunningSimulator) -> None:
    add_key("main")
    report = poll_models()
    assert report.ok == 1
    assert ModelInfo.objects.count() == len(catalog.MODELS)
    llama = ModelInfo.objects.get(model_id=LLAMA_70B)
    assert llama.state == ModelInfo.State.AVAILABLE
    assert (llama.context_length, llama.organization, llama.type) == (131072, "Meta", "chat")
    assert (llama.pricing_input, llama.pricing_output) == (Decimal("0.88"), Decimal("0.88"))
    # A baseline is not news: no "added" event for every model of the account.
    assert not ModelChange.objects.exists()
    assert ModelInfo.objects.get(model_id=catalog.DEFAULT_IMAGE_MODEL).context_length is None


def test_a_rerun_changes_nothing(together: RunningSimulator) -> None:
    add_key("main")
    add_key("second")
    poll_models()
    before = _catalog_state()
    poll_models()
    assert _catalog_state() == before
    assert ModelInfo.objects.count() == len(catalog.MODELS)
    assert not ModelChange.objects.exists()


def test_new_and_changed_models_are_recorded_as_events(together: RunningSimulator) -> None:
    add_key("main")
    # The catalog knew one model, with another context length and price than Together now reports.
    ModelInfo.objects.create(model_id=LLAMA_70B, context_length=8192, pricing_input=Decimal("0.9"))
    poll_models()
    added = ModelChange.objects.filter(kind=ModelChange.Kind.ADDED)
    assert added.count() == len(catalog.MODELS) - 1
    assert ModelInfo.objects.filter(state=ModelInfo.State.NEW).count() == len(catalog.MODELS) - 1
    changed = ModelChange.objects.get(kind=ModelChange.Kind.CHANGED)
    assert changed.model.model_id == LLAMA_70B
    assert (changed.before["context_length"], changed.after["context_length"]) == (8192, 131072)
    assert (changed.before["pricing_input"], changed.after["pricing_input"]) == ("0.9", "0.88")


def test_new_models_become_available_after_a_week(together: RunningSimulator) -> None:
    add_key("main")
    ModelInfo.objects.create(model_id=LLAMA_70B, context_length=131072)
    poll_models()
    ModelInfo.objects.update(first_seen=timezone.now() - timedelta(days=8))
    poll_models()
    assert not ModelInfo.objects.filter(state=ModelInfo.State.NEW).exists()


def test_a_model_removed_upstream_is_kept_and_marked_removed(together: RunningSimulator) -> None:
    add_key("main")
    poll_models()
    _remove_from_upstream(together, catalog.REMOVABLE_MODEL)
    report = poll_models()
    assert report.counts["removed"] == 1
    removed = ModelInfo.objects.get(model_id=catalog.REMOVABLE_MODEL)
    assert removed.state == ModelInfo.State.REMOVED
    assert removed.removed_at is not None
    event = ModelChange.objects.get(kind=ModelChange.Kind.REMOVED)
    assert event.model == removed
    assert event.before["context_length"] == 32768
    poll_models()
    assert ModelChange.objects.count() == 1  # the rerun adds nothing


def test_a_removed_model_our_traffic_used_is_flagged_with_a_successor(together: RunningSimulator) -> None:
    add_key("main")
    poll_models()
    RequestLog.objects.create(endpoint="/v1/chat/completions", model_requested=OLD_LLAMA, status_code=200)
    _remove_from_upstream(together, OLD_LLAMA)
    poll_models()
    removed = ModelInfo.objects.get(model_id=OLD_LLAMA)
    assert removed.needs_attention
    # Same organization, family and type, context at least 131072, and the newest of those.
    assert removed.successor == NEWEST_BIG_LLAMA


def test_a_removed_model_nobody_used_is_not_flagged(together: RunningSimulator) -> None:
    add_key("main")
    poll_models()
    old = timezone.now() - timedelta(days=30)
    RequestLog.objects.create(endpoint="/v1/chat/completions", model_requested=OLD_LLAMA, created_at=old)
    _remove_from_upstream(together, OLD_LLAMA)
    poll_models()
    removed = ModelInfo.objects.get(model_id=OLD_LLAMA)
    assert removed.is_removed
    assert not removed.needs_attention


def test_a_model_that_comes_back_is_restored(together: RunningSimulator) -> None:
    add_key("main")
    poll_models()
    _remove_from_upstream(together, catalog.REMOVABLE_MODEL)
    poll_models()
    together.set_scenario(remove_models={})
    poll_models()
    model = ModelInfo.objects.get(model_id=catalog.REMOVABLE_MODEL)
    assert (model.state, model.removed_at) == (ModelInfo.State.AVAILABLE, None)
    kinds = list(ModelChange.objects.order_by("id").values_list("kind", flat=True))
    assert kinds == [ModelChange.Kind.REMOVED, ModelChange.Kind.RESTORED]


def test_a_malformed_body_on_one_key_is_recorded_and_the_other_keys_carry_on(
    together: RunningSimulator,
) -> None:
    add_key("broken")
    add_key("good")
    report = poll_models(config=fault_for_key("broken", "malformed"))
    assert (report.ok, report.failed) == (1, 1)
    assert ModelInfo.objects.count() == len(catalog.MODELS)
    state = PollerKeyState.objects.get(poller="poll_models", key__name="broken")
    assert state.last_error_kind == "bad_response"
    assert state.consecutive_failures == 1
    heartbeat = PollerHeartbeat.objects.get(name="poll_models")
    assert heartbeat.last_success is not None
    assert heartbeat.last_report["errors"][0]["key"] == "broken"


def test_a_poll_where_every_key_fails_records_an_error_and_removes_nothing(
    together: RunningSimulator,
) -> None:
    add_key("main")
    poll_models()
    report = poll_models(config=fault_for_key("main", "503"))
    assert report.failed == 1
    heartbeat = PollerHeartbeat.objects.get(name="poll_models")
    assert heartbeat.is_failing
    assert "service_unavailable" in heartbeat.last_error
    assert not ModelInfo.objects.filter(state=ModelInfo.State.REMOVED).exists()


def test_no_model_is_called_removed_while_a_key_could_not_answer(together: RunningSimulator) -> None:
    add_key("main")
    add_key("flaky")
    poll_models()
    _remove_from_upstream(together, catalog.REMOVABLE_MODEL)
    poll_models(config=fault_for_key("flaky", "503"))
    assert not ModelInfo.objects.filter(state=ModelInfo.State.REMOVED).exists()
    poll_models()
    assert ModelInfo.objects.get(model_id=catalog.REMOVABLE_MODEL).is_removed
