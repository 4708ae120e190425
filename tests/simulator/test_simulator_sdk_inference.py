"""The real openai and together SDKs against the simulator: models, chat, streams, tools, embeddings."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import openai
import pytest
import together

from together_dash.simulator import catalog
from together_dash.simulator.inference import REPLY

MODEL = catalog.DEFAULT_CHAT_MODEL
MESSAGES = [{"role": "system", "content": "You are concise."}, {"role": "user", "content": "Say hello"}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
            "required": ["city", "unit"],
        },
    },
}
ID_SHAPE = re.compile(r"^[A-Za-z0-9]{7}-[A-Za-z0-9]{6}-[0-9a-f]{16}$")


@pytest.fixture(params=["openai", "together"])
def client(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue(f"{request.param}_client")


def test_v1_models_is_a_bare_array_over_plain_http(root_http: httpx.Client) -> None:
    # together 3.1.1 has no wrapper for GET /v1/models (its models.list() is the project's own models).
    models = root_http.get("/v1/models").json()

    assert isinstance(models, list)
    by_id = {m["id"]: m for m in models}
    assert by_id[MODEL]["context_length"] == 131072
    assert by_id[MODEL]["pricing"]["input"] == 0.88
    assert by_id["BAAI/bge-large-en-v1.5"]["type"] == "embedding"
    assert by_id[catalog.NON_SERVERLESS_MODEL]["object"] == "model"


def test_openai_sdk_sees_the_same_bare_array_it_sees_from_together(openai_client: openai.OpenAI) -> None:
    # Like real Together, /models is not an OpenAI page: the raw body is what a client can use.
    raw = openai_client.models.with_raw_response.list()

    body = raw.http_response.json()
    assert isinstance(body, list)
    assert {m["id"] for m in body} == {m.id for m in catalog.MODELS}
    assert set(body[0]["pricing"]) == {"hourly", "input", "output", "base", "finetune"}


def test_chat_completion_has_together_shape(client: Any) -> None:
    completion = client.chat.completions.create(model=MODEL, messages=MESSAGES)

    assert ID_SHAPE.match(completion.id)
    assert completion.object == "chat.completion"
    assert completion.model == MODEL
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert choice.message.content == "".join(REPLY)
    usage = completion.usage
    assert usage.completion_tokens == len(REPLY) + 1  # the end-of-turn token counts, as in real usage
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens > 0


def test_max_tokens_caps_the_reply_with_finish_reason_length(client: Any) -> None:
    completion = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=3)

    assert completion.choices[0].finish_reason == "length"
    assert completion.choices[0].message.content == "".join(REPLY[:3])
    assert completion.usage.completion_tokens == 3


def test_stream_carries_usage_only_on_the_last_chunk(client: Any) -> None:
    chunks = list(client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True))

    assert [c.usage for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop"
    assert last.usage.completion_tokens == len(REPLY) + 1
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "".join(REPLY)
    assert len({c.id for c in chunks}) == 1


def test_stream_options_include_usage_changes_nothing(openai_client: openai.OpenAI) -> None:
    chunks = list(
        openai_client.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
            max_tokens=2,
        )
    )

    assert chunks[-1].choices[0].finish_reason == "length"
    assert chunks[-1].usage.completion_tokens == 2
    assert all(c.usage is None for c in chunks[:-1])


def test_tools_make_a_deterministic_tool_call(client: Any) -> None:
    completion = client.chat.completions.create(model=MODEL, messages=MESSAGES, tools=[WEATHER_TOOL])

    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.type == "function"
    assert call.id.startswith("call_")
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "example", "unit": "c"}


def test_tool_choice_none_and_tool_results_get_a_text_reply(client: Any) -> None:
    declined = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, tools=[WEATHER_TOOL], tool_choice="none"
    )
    answered = client.chat.completions.create(
        model=MODEL,
        tools=[WEATHER_TOOL],
        messages=[
            *MESSAGES,
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": "{}"},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ],
    )

    assert declined.choices[0].finish_reason == "stop"
    assert answered.choices[0].message.content == "".join(REPLY)


def test_streamed_tool_call_assembles_like_the_recording(client: Any) -> None:
    chunks = list(
        client.chat.completions.create(model=MODEL, messages=MESSAGES, tools=[WEATHER_TOOL], stream=True)
    )

    calls = [call for c in chunks for call in (c.choices[0].delta.tool_calls or [])]
    assert calls[0].function.name == "get_weather"
    assert calls[0].id.startswith("call_")
    arguments = "".join(call.function.arguments or "" for call in calls)
    assert json.loads(arguments) == {"city": "example", "unit": "c"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert chunks[-1].usage.total_tokens > 0
    assert all(c.usage is None for c in chunks[:-1])


def test_context_overflow_is_together_400(client: Any) -> None:
    errors = (openai.BadRequestError, together.BadRequestError)

    with pytest.raises(errors) as caught:
        client.chat.completions.create(model="google/gemma-2-27b-it", messages=MESSAGES, max_tokens=8190)

    assert caught.value.status_code == 400
    assert "`inputs` tokens + `max_new_tokens` must be <= 8192. Given: " in str(caught.value)
    assert "and 8190 `max_new_tokens`" in str(caught.value)


def test_unknown_model_is_404_model_not_found(openai_client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        openai_client.chat.completions.create(model="meta-llama/Nope-1B", messages=MESSAGES)

    assert caught.value.code == "model_not_found"
    assert caught.value.type == "invalid_request_error"
    assert "Unable to access model meta-llama/Nope-1B." in caught.value.message


def test_non_serverless_model_is_400_model_not_available(openai_client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client.chat.completions.create(model=catalog.NON_SERVERLESS_MODEL, messages=MESSAGES)

    assert caught.value.code == "model_not_available"
    assert f"Unable to access non-serverless model {catalog.NON_SERVERLESS_MODEL}" in caught.value.message


def test_text_completions_json_and_stream(openai_client: openai.OpenAI) -> None:
    completion = openai_client.completions.create(model=MODEL, prompt="Once upon a time")
    chunks = list(openai_client.completions.create(model=MODEL, prompt="Once upon a time", stream=True))

    assert completion.object == "text.completion"
    assert completion.choices[0].text == "".join(REPLY)
    assert "".join(c.choices[0].text for c in chunks) == "".join(REPLY)
    assert chunks[-1].usage.prompt_tokens == completion.usage.prompt_tokens


def test_embeddings_are_deterministic_unit_vectors(client: Any) -> None:
    first = client.embeddings.create(model="BAAI/bge-large-en-v1.5", input=["hello", "world"])
    again = client.embeddings.create(model="BAAI/bge-large-en-v1.5", input="hello")

    assert first.object == "list"
    assert [d.index for d in first.data] == [0, 1]
    vector = first.data[0].embedding
    assert len(vector) == 1024
    assert abs(sum(x * x for x in vector) - 1.0) < 1e-3
    assert again.data[0].embedding == vector
    assert first.data[1].embedding != vector


def test_embedding_model_cannot_chat(openai_client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        openai_client.chat.completions.create(model="BAAI/bge-large-en-v1.5", messages=MESSAGES)


def test_images_generate_urls_and_base64(together_client: together.Together) -> None:
    by_url = together_client.images.generate(model=catalog.DEFAULT_IMAGE_MODEL, prompt="a cat")
    inline = together_client.images.generate(
        model=catalog.DEFAULT_IMAGE_MODEL, prompt="a cat", response_format="base64"
    )

    assert by_url.data[0].url.endswith(".png")
    assert inline.data[0].b64_json


def test_rerank_orders_documents_by_overlap_with_the_query(together_client: together.Together) -> None:
    documents = ["the sky is green", "a cat sat on a mat", "the cat is on the mat today"]

    ranked = together_client.rerank.create(
        model="Salesforce/Llama-Rank-V1",
        query="cat on the mat",
        documents=documents,
        top_n=2,
        return_documents=True,
    )

    assert ranked.object == "rerank"
    assert [r.index for r in ranked.results] == [2, 1]
    assert ranked.results[0].document.text == documents[2]
    assert 0 <= ranked.results[1].relevance_score < ranked.results[0].relevance_score < 1
    assert ranked.usage.prompt_tokens > 0
    assert ranked.usage.completion_tokens == 0


def test_rerank_of_objects_uses_the_rank_fields_and_omits_documents(root_http: httpx.Client) -> None:
    body = {
        "model": "Salesforce/Llama-Rank-V1",
        "query": "red apples",
        "documents": [{"title": "red apples", "note": "x"}, {"title": "green pears", "note": "red apples"}],
        "rank_fields": ["title"],
    }

    answer = root_http.post("/v1/rerank", json=body).json()

    assert [r["index"] for r in answer["results"]] == [0, 1]
    assert all(r["document"] == {} for r in answer["results"])


def test_rerank_refuses_a_chat_model(together_client: together.Together) -> None:
    with pytest.raises(together.BadRequestError):
        together_client.rerank.create(model=MODEL, query="q", documents=["d"])
