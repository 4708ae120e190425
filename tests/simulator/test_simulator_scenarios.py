"""Rate-limit budgets, credits, removed models, revoked keys, latency and accepted keys."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import openai
import pytest

from together_dash.simulator import catalog, errors
from together_dash.simulator.scenario import RateLimit, Scenario, load_scenario
from together_dash.simulator.testing import RunningSimulator, run_simulator

MODEL = catalog.SMALL_CHAT_MODEL
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}


def test_rate_limit_headers_decrement_and_reset(sim: RunningSimulator, http: httpx.Client) -> None:
    sim.freeze_clock()
    sim.set_scenario(rate_limit={"requests": 5, "tokens": 1000, "window_s": 10})

    first = http.post("/chat/completions", json=CHAT)
    second = http.post("/chat/completions", json=CHAT)
    used = first.json()["usage"]["total_tokens"]
    sim.advance(10)
    after_window = http.post("/chat/completions", json=CHAT)

    assert first.headers["x-ratelimit-limit"] == "5"
    assert first.headers["x-ratelimit-remaining"] == "4"
    assert second.headers["x-ratelimit-remaining"] == "3"
    assert first.headers["x-tokenlimit-limit"] == "1000"
    assert int(first.headers["x-tokenlimit-remaining"]) == 1000 - used
    assert int(second.headers["x-tokenlimit-remaining"]) == 1000 - 2 * used
    assert float(first.headers["x-ratelimit-reset"]) == 10.0
    assert after_window.headers["x-ratelimit-remaining"] == "4"


def test_request_budget_exhausted_is_429_dynamic_request_limited(
    sim: RunningSimulator, openai_client: openai.OpenAI
) -> None:
    sim.freeze_clock()
    sim.set_scenario(rate_limit={"requests": 2, "tokens": 10**6, "window_s": 1.5})
    for _ in range(2):
        openai_client.chat.completions.create(**CHAT)

    with pytest.raises(openai.RateLimitError) as caught:
        openai_client.chat.completions.create(**CHAT)

    assert caught.value.type == "dynamic_request_limited"
    assert caught.value.response.headers["x-ratelimit-remaining"] == "0"
    assert float(caught.value.response.headers["x-ratelimit-reset"]) == 1.5
    sim.advance(1.5)
    assert openai_client.chat.completions.create(**CHAT).choices


def test_token_budget_exhausted_is_429_dynamic_token_limited(
    sim: RunningSimulator, http: httpx.Client
) -> None:
    sim.set_scenario(rate_limit={"requests": 100, "tokens": 30, "window_s": 60})

    ok = http.post("/chat/completions", json=CHAT)
    limited = http.post("/chat/completions", json=CHAT)

    assert ok.status_code == 200
    assert limited.status_code == 429
    assert limited.json()["error"]["type"] == "dynamic_token_limited"


def test_per_key_limits_are_separate_budgets(sim: RunningSimulator) -> None:
    sim.set_scenario(key_rate_limits={"tiny": {"requests": 1, "tokens": 10**6, "window_s": 60}})
    tiny = httpx.Client(base_url=sim.base_url, headers={"Authorization": "Bearer tiny"})
    other = httpx.Client(base_url=sim.base_url, headers={"Authorization": "Bearer other"})

    assert tiny.post("/chat/completions", json=CHAT).status_code == 200
    assert tiny.post("/chat/completions", json=CHAT).status_code == 429
    assert other.post("/chat/completions", json=CHAT).status_code == 200


def test_credits_run_out_after_n_billed_calls_then_come_back(
    sim: RunningSimulator, openai_client: openai.OpenAI
) -> None:
    sim.set_scenario(credits_after_calls=2)
    openai_client.chat.completions.create(**CHAT)
    openai_client.embeddings.create(model=catalog.DEFAULT_EMBEDDING_MODEL, input="x")

    with pytest.raises(openai.APIStatusError) as caught:
        openai_client.chat.completions.create(**CHAT)
    listed = openai_client.models.with_raw_response.list()  # free calls keep working
    sim.add_credits(1)
    recovered = openai_client.chat.completions.create(**CHAT)

    assert caught.value.status_code == 402
    assert caught.value.type == "credit_limit"
    assert errors.CREDIT_LIMIT in caught.value.message
    assert listed.http_response.status_code == 200
    assert recovered.choices[0].finish_reason == "stop"


def test_failed_calls_are_not_billed(sim: RunningSimulator, http: httpx.Client) -> None:
    sim.set_credits(1)

    http.post("/chat/completions", json={**CHAT, "model": "nope/nope"})
    response = http.post("/chat/completions", json=CHAT)

    assert response.status_code == 200


def test_model_disappears_after_the_scenario_delay(sim: RunningSimulator, http: httpx.Client) -> None:
    sim.freeze_clock()
    sim.set_scenario(remove_models={catalog.REMOVABLE_MODEL: 30})
    before = http.post("/chat/completions", json={**CHAT, "model": catalog.REMOVABLE_MODEL})
    sim.advance(30)

    listed = {m["id"] for m in http.get("/models").json()}
    after = http.post("/chat/completions", json={**CHAT, "model": catalog.REMOVABLE_MODEL})

    assert before.status_code == 200
    assert catalog.REMOVABLE_MODEL not in listed
    assert len(listed) == len(catalog.MODELS) - 1
    assert after.status_code == 404
    assert after.json()["error"]["code"] == "model_not_found"


def test_revoked_key_gets_the_real_401(sim: RunningSimulator, http: httpx.Client) -> None:
    assert http.get("/models").status_code == 200

    sim.revoke("sim-test-key")
    response = http.get("/models")

    assert response.status_code == 401
    assert response.json() == {
        "error": {
            "message": errors.INVALID_API_KEY,
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }
    sim.revoke("sim-test-key", revoked=False)
    assert http.get("/models").status_code == 200


def test_a_key_revoked_mid_run_by_scenario(sim: RunningSimulator, http: httpx.Client) -> None:
    sim.freeze_clock()
    sim.set_scenario(revoke_keys={"sim-test-key": 5})

    assert http.get("/models").status_code == 200
    sim.advance(5)
    assert http.get("/models").status_code == 401


def test_accepted_keys_restrict_access(sim: RunningSimulator) -> None:
    sim.reset(keys=["k1", "k2"])

    def status(key: str) -> int:
        return httpx.get(f"{sim.base_url}/models", headers={"Authorization": f"Bearer {key}"}).status_code

    assert (status("k1"), status("k2"), status("k3")) == (200, 200, 401)
    assert httpx.get(f"{sim.base_url}/models").status_code == 401


def test_missing_or_empty_key_is_401_even_when_any_key_goes(sim: RunningSimulator) -> None:
    assert httpx.get(f"{sim.base_url}/models").status_code == 401
    assert httpx.get(f"{sim.base_url}/models", headers={"Authorization": "Basic abc"}).status_code == 401


def test_fixed_latency_applies_to_every_response(sim: RunningSimulator, http: httpx.Client) -> None:
    sim.set_scenario(latency_ms=100)

    started = time.monotonic()
    http.get("/models")
    http.get("/whoami")

    assert time.monotonic() - started >= 0.2


def test_reset_restores_the_startup_scenario(sim: RunningSimulator, http: httpx.Client) -> None:
    sim.set_scenario(credits_after_calls=0, latency_ms=5)
    sim.reset()

    assert http.post("/chat/completions", json=CHAT).status_code == 200
    assert sim.summary()["scenario"]["latency_ms"] == 0


def test_unknown_scenario_fields_are_refused(sim: RunningSimulator) -> None:
    with pytest.raises(httpx.HTTPStatusError):
        sim.set_scenario(credit_after_calls=3)
    with pytest.raises(ValueError, match="unknown scenario field"):
        Scenario.from_dict({"latencyms": 1})


def test_scenario_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "scenario.json"
    path.write_text(
        json.dumps(
            {
                "keys": ["a"],
                "latency_ms": 100,
                "credits_after_calls": 10,
                "remove_models": {catalog.REMOVABLE_MODEL: 30},
                "key_rate_limits": {"a": {"requests": 5, "tokens": 100, "window_s": 1}},
                "finetune_failure": {"status": "user_error", "at_progress": 0.25},
                "job_speed": 10,
            }
        )
    )

    scenario = load_scenario(path)

    assert scenario.keys == ("a",)
    assert scenario.rate_limit_for("a") == RateLimit(5, 100, 1)
    assert scenario.rate_limit_for("b") == RateLimit()
    assert Scenario.from_dict(scenario.to_dict()) == scenario


def test_simulator_starts_fast_and_frees_its_port() -> None:
    started = time.monotonic()
    with run_simulator() as sim:
        boot = time.monotonic() - started
        assert httpx.get(f"{sim.root_url}/_sim/health").json() == {"ok": True}
        url = sim.base_url

    assert boot < 1.0
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/models", headers={"Authorization": "Bearer k"}, timeout=1)


def test_models_reports_the_budget_without_spending_it(sim: RunningSimulator, http: httpx.Client) -> None:
    sim.set_scenario(rate_limit={"requests": 600, "tokens": 10**6, "window_s": 60})

    http.post("/chat/completions", json=CHAT)
    first = http.get("/models")
    second = http.get("/models")

    assert first.headers["x-ratelimit-limit"] == "600"
    assert first.headers["x-ratelimit-remaining"] == second.headers["x-ratelimit-remaining"] == "599"
