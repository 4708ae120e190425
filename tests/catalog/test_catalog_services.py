"""Successors and near misses: suggestions over the polled catalog, never silent fixes."""

from __future__ import annotations

import pytest

from together_dash.catalog.models import ModelInfo
from together_dash.catalog.polling import poll_models
from together_dash.catalog.services import close_matches, family_of, suggest_successor
from together_dash.pollers.testing import add_key
from together_dash.simulator.testing import RunningSimulator


@pytest.mark.parametrize(
    ("model_id", "organization", "family"),
    [
        ("meta-llama/Meta-Llama-3.1-8B-Instruct-Turbo", "Meta", "llama"),
        ("meta-llama/Llama-3.3-70B-Instruct-Turbo", "Meta", "llama"),
        ("Qwen/Qwen2.5-72B-Instruct-Turbo", "Qwen", "qwen"),
        ("Qwen/QwQ-32B-Preview", "Qwen", "qwq"),
        ("deepseek-ai/DeepSeek-V3", "DeepSeek", "deepseek"),
        ("mistralai/Mixtral-8x7B-Instruct-v0.1", "mistralai", "mixtral"),
        ("black-forest-labs/FLUX.1-schnell", "Black Forest Labs", "flux"),
    ],
)
def test_family_comes_from_the_model_name(model_id: str, organization: str, family: str) -> None:
    assert family_of(model_id, organization) == family


@pytest.fixture
def polled_catalog(together: RunningSimulator, db: None) -> None:
    add_key("main")
    poll_models()


def test_the_successor_is_the_newest_of_the_same_family_with_enough_context(polled_catalog: None) -> None:
    ModelInfo.objects.filter(model_id="meta-llama/Meta-Llama-3.1-405B-Instruct-Turbo").update(state="removed")
    assert suggest_successor("meta-llama/Meta-Llama-3.1-405B-Instruct-Turbo") == (
        "meta-llama/Llama-4-Maverick-17B-128E-Instruct-FP8"
    )
    # Another type (moderation) or a smaller context never qualifies.
    assert suggest_successor("meta-llama/Llama-Guard-3-8B") is None
    assert suggest_successor("deepseek-ai/DeepSeek-R1") is None  # V3 has less context than R1


def test_no_successor_for_an_unknown_model(polled_catalog: None) -> None:
    assert suggest_successor("nobody/nothing") is None


def test_close_matches_suggest_known_ids_for_a_near_miss(polled_catalog: None) -> None:
    matches = close_matches("meta-llama/Llama-3.3-70B-Instruct")
    assert matches[0] == "meta-llama/Llama-3.3-70B-Instruct-Turbo"
    assert len(matches) <= 5
    # Case and a missing organization are near misses too, but only ever suggested.
    assert close_matches("llama-3.3-70b-instruct-turbo")[0] == "meta-llama/Llama-3.3-70B-Instruct-Turbo"


def test_close_matches_never_offer_the_id_itself_or_removed_models(polled_catalog: None) -> None:
    exact = "Qwen/Qwen2.5-7B-Instruct-Turbo"
    assert exact not in close_matches(exact)
    ModelInfo.objects.filter(model_id="Qwen/Qwen2.5-72B-Instruct-Turbo").update(state="removed")
    assert "Qwen/Qwen2.5-72B-Instruct-Turbo" not in close_matches("Qwen/Qwen2.5-72B-Instruct")
    assert close_matches("completely-unrelated") == []
