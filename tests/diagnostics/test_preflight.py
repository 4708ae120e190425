"""Preflight against a catalog polled from the simulator: exact ids, removed models, the token budget."""

from __future__ import annotations

import json
import math
from io import StringIO
from pathlib import Path

import httpx
import pytest
from django.core.management import CommandError, call_command

from together_dash.catalog.models import ModelInfo
from together_dash.catalog.polling import poll_models
from together_dash.diagnostics.preflight import ESTIMATE_NAME, PreflightInputError, check, estimate_tokens
from together_dash.pollers.testing import add_key
from together_dash.simulator.testing import RunningSimulator

pytestmark = pytest.mark.django_db

LLAMA = "meta-llama/Llama-3.3-70B-Instruct-Turbo"  # 131072 tokens of context
GEMMA = "google/gemma-2-27b-it"  # 8192 tokens of context
OLD_LLAMA = "meta-llama/Meta-Llama-3.1-70B-Instruct-Turbo"


@pytest.fixture
def catalog(simulator: RunningSimulator, settings: object) -> RunningSimulator:
    """The simulator's catalog, polled into ModelInfo the way the poller does it."""
    simulator.reset()
    settings.TOGETHER_BASE_URL = simulator.base_url
    add_key("main")
    assert poll_models().ok == 1
    return simulator


def _remove_upstream(simulator: RunningSimulator, model_id: str) -> None:
    simulator.freeze_clock()
    simulator.set_scenario(remove_models={model_id: 1})
    simulator.advance(2)
    poll_models()
    assert ModelInfo.objects.get(model_id=model_id).is_removed


def test_a_prompt_that_fits_passes_with_the_numbers_behind_it(catalog: RunningSimulator) -> None:
    result = check(LLAMA, 1000, prompt="Summarise this paragraph.")
    assert result.ok and result.model_found and result.fits
    assert (result.model_id, result.context_length) == (LLAMA, 131072)
    assert result.prompt_tokens == math.ceil(len(b"Summarise this paragraph.") / 3)
    assert result.total_tokens == result.prompt_tokens + 1000
    assert result.tokenizer == ESTIMATE_NAME
    assert result.problems == []


def test_prompt_plus_max_tokens_over_the_context_fails_and_says_by_how_much(
    catalog: RunningSimulator,
) -> None:
    prompt = "word " * 6000  # 30000 bytes -> 10000 estimated tokens, over gemma's 8192 on its own
    result = check(GEMMA, 100, prompt=prompt)
    assert result.model_found and result.fits is False and not result.ok
    assert result.prompt_tokens == 10000
    assert "10000 prompt tokens + 100 max_tokens = 10100" in result.problems[0]
    assert "8192" in result.problems[0]


def test_the_boundary_is_inclusive_like_together_s_own_rule(catalog: RunningSimulator) -> None:
    prompt_tokens = check(GEMMA, 1, prompt="abc").prompt_tokens
    assert check(GEMMA, 8192 - prompt_tokens, prompt="abc").fits is True
    assert check(GEMMA, 8193 - prompt_tokens, prompt="abc").fits is False


def test_messages_count_their_content_plus_a_per_message_overhead(catalog: RunningSimulator) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Olá, señor ☃"}]
    result = check(LLAMA, 10, messages=messages)
    expected = 3 + sum(4 + estimate_tokens(m["content"]) for m in messages)
    assert result.prompt_tokens == expected
    # Non-ASCII text costs more bytes, so the estimate stays on the safe side.
    assert estimate_tokens("☃☃☃") == 3


def test_the_estimate_never_undercounts_the_simulator(catalog: RunningSimulator) -> None:
    """What preflight passes, Together's context check (as the simulator applies it) accepts."""
    _, secret = add_key("probe")
    messages = [{"role": "user", "content": "lorem ipsum " * 2000}]
    result = check(GEMMA, 1, messages=messages)
    budget = 8192 - result.prompt_tokens
    assert check(GEMMA, budget, messages=messages).ok
    answer = httpx.post(
        f"{catalog.base_url}/chat/completions",
        json={"model": GEMMA, "messages": messages, "max_tokens": budget},
        headers={"Authorization": f"Bearer {secret}"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["usage"]["prompt_tokens"] <= result.prompt_tokens


def test_an_unknown_id_is_not_matched_loosely_but_close_matches_are_offered(
    catalog: RunningSimulator,
) -> None:
    result = check("meta-llama/llama-3.3-70b-instruct-turbo", 10, prompt="hi")
    assert not result.model_found and not result.ok and result.fits is None
    assert result.close_matches[0] == LLAMA
    assert "not in Together's model catalog" in result.problems[0]
    assert LLAMA in result.problems[0]


def test_a_removed_model_is_reported_with_its_successor(catalog: RunningSimulator) -> None:
    _remove_upstream(catalog, OLD_LLAMA)
    result = check(OLD_LLAMA, 10, prompt="hi")
    assert not result.model_found and not result.ok
    assert result.model_state == "removed"
    successor = ModelInfo.objects.get(model_id=result.successor)
    assert successor.organization == "Meta" and not successor.is_removed
    assert "was removed" in result.problems[0] and result.successor in result.problems[0]


def test_an_empty_catalog_says_to_poll_it_first(db: None) -> None:
    result = check(LLAMA, 10, prompt="hi")
    assert not result.ok and "poll_models" in result.problems[0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"model": "", "max_tokens": 10, "prompt": "hi"}, "model"),
        ({"model": LLAMA, "max_tokens": 0, "prompt": "hi"}, "max_tokens"),
        ({"model": LLAMA, "max_tokens": 10}, "either messages or a prompt"),
        (
            {
                "model": LLAMA,
                "max_tokens": 10,
                "prompt": "hi",
                "messages": [{"role": "user", "content": "x"}],
            },
            "either messages or a prompt",
        ),
        ({"model": LLAMA, "max_tokens": 10, "messages": [{"role": "robot", "content": "x"}]}, "role"),
        ({"model": LLAMA, "max_tokens": 10, "messages": []}, "messages"),
    ],
)
def test_malformed_input_is_refused_with_the_reason(db: None, kwargs: dict, message: str) -> None:
    with pytest.raises(PreflightInputError, match=message):
        check(**kwargs)


# ---- the command -------------------------------------------------------------------------------------


def test_the_command_prints_the_verdict_and_exits_0_when_it_fits(catalog: RunningSimulator) -> None:
    out = StringIO()
    call_command("preflight", "--model", LLAMA, "--prompt", "Hello there", "--max-tokens", "100", stdout=out)
    text = out.getvalue()
    assert text.startswith(f"OK  {LLAMA}") and "131072" in text and ESTIMATE_NAME in text


def test_the_command_exits_1_and_prints_json_when_it_would_fail(
    catalog: RunningSimulator, tmp_path: Path
) -> None:
    messages = tmp_path / "messages.json"
    messages.write_text(json.dumps([{"role": "user", "content": "x" * 30000}]))
    out = StringIO()
    with pytest.raises(SystemExit) as exit_info:
        call_command(
            "preflight",
            "--model",
            GEMMA,
            "--messages-file",
            str(messages),
            "--max-tokens",
            "10",
            "--json",
            stdout=out,
        )
    assert exit_info.value.code == 1
    result = json.loads(out.getvalue())
    assert (result["ok"], result["fits"], result["context_length"]) == (False, False, 8192)
    assert result["prompt_tokens"] == 3 + 4 + 10000


def test_the_command_refuses_an_unreadable_messages_file(db: None, tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("[{")
    with pytest.raises(CommandError, match="Cannot read messages"):
        call_command("preflight", "--model", LLAMA, "--messages-file", str(broken), "--max-tokens", "1")
