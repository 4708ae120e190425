"""redact(): every secret shape it knows is replaced, whatever the case; prose is left alone."""
from __future__ import annotations

import pytest

from together_dash.together.redact import REDACTED, redact

HEX_KEY = "0123456789abcdef" * 4


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Authorization: Bearer abc.def-123", "abc.def-123"),
        ("authorization: BEARER abc.def-123", "abc.def-123"),
        ('{"api_key": "k3y-value-long-enough"}', "k3y-value-long-enough"),
        ("Api-Key=k3y-value-long-enough&x=1", "k3y-value-long-enough"),
        ('"PASSWORD": "hunter2hunter2"', "hunter2hunter2"),
        ("token:abcdefghijklmnop", "abcdefghijklmnop"),
        ("key tgp_AbCdEfGh12345678 leaked", "tgp_AbCdEfGh12345678"),
        ("app key tdk_AbCdEfGh12345678", "tdk_AbCdEfGh12345678"),
        ("ops token tdo_AbCdEfGh12345678", "tdo_AbCdEfGh12345678"),
        ("openai sk-AbCdEfGh1234567890abcd", "sk-AbCdEfGh1234567890abcd"),
        (f"classic key {HEX_KEY} here", HEX_KEY),
    ],
)
def test_each_secret_shape_is_replaced(text: str, secret: str) -> None:
    redacted = redact(text)
    assert secret not in redacted and REDACTED in redacted


def test_literal_secrets_of_any_shape_are_replaced() -> None:
    assert redact("the key is xyz!9", ("xyz!9",)) == f"the key is {REDACTED}"


@pytest.mark.parametrize(
    "text",
    [
        "Invalid API key: check it and try again.",
        "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 8193.",
        "The model `meta-llama/Llama-3.3-70B-Instruct-Turbo` does not exist",
        "",
        "Credit limit exceeded. Please add credits at https://api.together.ai/settings/billing",
    ],
)
def test_prose_without_secrets_is_unchanged(text: str) -> None:
    assert redact(text) == text


def test_several_secrets_in_one_text_are_all_replaced() -> None:
    text = f"Bearer tok123456 then tdk_AbCdEfGh12345678 and {HEX_KEY}"
    redacted = redact(text)
    assert "tok123456" not in redacted and "tdk_" not in redacted and HEX_KEY not in redacted
