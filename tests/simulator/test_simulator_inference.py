"""The deterministic model behaviour: token counts, tool choice and example arguments."""

from __future__ import annotations

from together_dash.simulator import inference


def test_token_count_is_a_quarter_of_the_characters_rounded_up() -> None:
    assert [inference.count_tokens(text) for text in ("", "a", "abcd", "abcde")] == [0, 1, 1, 2]


def test_chat_prompt_counts_framing_per_message() -> None:
    messages = [{"role": "system", "content": "abcd"}, {"role": "user", "content": "abcdefgh"}]

    assert inference.chat_prompt_tokens(messages) == 3 + (4 + 1) + (4 + 2)


def test_image_parts_cost_a_flat_amount() -> None:
    parts = [{"type": "text", "text": "abcd"}, {"type": "image_url", "image_url": {"url": "data:..."}}]

    assert inference.chat_prompt_tokens([{"role": "user", "content": parts}]) == 3 + 4 + 1 + 100


def test_tool_choice_by_name_picks_that_tool() -> None:
    tools = [{"type": "function", "function": {"name": "a"}}, {"type": "function", "function": {"name": "b"}}]
    body = {
        "tools": tools,
        "tool_choice": {"type": "function", "function": {"name": "b"}},
        "messages": [{"role": "user", "content": "x"}],
    }

    assert inference.chosen_tool(body) == tools[1]
    assert inference.chosen_tool({**body, "tool_choice": "auto"}) == tools[0]
    assert inference.chosen_tool({**body, "tool_choice": "none"}) is None


def test_example_arguments_fill_required_fields_by_type() -> None:
    schema = {
        "type": "object",
        "properties": {
            "n": {"type": "integer"},
            "flag": {"type": "boolean"},
            "tags": {"type": "array"},
            "where": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            "optional": {"type": "string"},
        },
        "required": ["n", "flag", "tags", "where"],
    }

    assert inference.example_arguments(schema) == {
        "n": 0,
        "flag": False,
        "tags": [],
        "where": {"city": "example"},
    }


def test_max_tokens_below_the_reply_truncates() -> None:
    stop = inference.plan_reply("m", 10, None, inference.DEFAULT_SHAPE)
    exact = inference.plan_reply("m", 10, len(inference.REPLY), inference.DEFAULT_SHAPE)
    roomy = inference.plan_reply("m", 10, len(inference.REPLY) + 1, inference.DEFAULT_SHAPE)

    assert (stop.finish_reason, stop.completion_tokens) == ("stop", len(inference.REPLY) + 1)
    assert (exact.finish_reason, exact.completion_tokens) == ("length", len(inference.REPLY))
    assert roomy.finish_reason == "stop"
