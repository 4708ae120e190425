"""Deterministic model behaviour: token counting, replies, tool calls, and the JSON of each response.

Token counting is a documented stand-in for a tokenizer, chosen to be conservative (it over-counts
English a little) and exactly reproducible:

* a string costs ceil(len(text) / 4) tokens;
* a chat prompt costs, per message, its text plus 4 tokens of chat-template framing, plus 3 tokens
  for the assistant header; image parts cost 100 tokens; `tools` cost the tokens of their JSON;
* a reply is a fixed sentence of REPLY tokens (one word each); a natural stop also counts the
  end-of-turn token, as real usage does; `max_tokens` below that truncates with finish_reason "length".

Prompt caching, for models with a cached-input price: when a chat request's leading messages (all but
the last) were the leading messages of a request of the same organisation and model within
PROMPT_CACHE_TTL_S, their tokens are reported as `cached_tokens` (part of `prompt_tokens`, as Together
reports them) and billed at the cached price.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from dataclasses import dataclass
from typing import Any

from together_dash.simulator import wire
from together_dash.simulator.catalog import CatalogModel

REPLY: tuple[str, ...] = (
    "This",
    " is",
    " a",
    " simulated",
    " reply",
    " from",
    " the",
    " Together",
    " API",
    " simulator",
    ".",
)
REPLY_TOKEN_IDS: tuple[int, ...] = (2028, 374, 264, 46836, 10052, 505, 279, 32255, 5446, 41115, 13)
EOT_TOKEN_ID = 128009
IMAGE_PART_TOKENS = 100
LOREM = "lorem ipsum dolor sit amet consectetur adipiscing elit "  # ASCII, so bytes == characters


def count_tokens(text: str) -> int:
    return (len(text) + 3) // 4


def _content_tokens(content: Any) -> int:
    if isinstance(content, str):
        return count_tokens(content)
    if isinstance(content, list):  # multimodal parts
        total = 0
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text":
                total += count_tokens(str(part.get("text", "")))
            else:
                total += IMAGE_PART_TOKENS
        return total
    return 0


def _message_tokens(message: Any) -> int:
    if not isinstance(message, dict):
        return 0
    total = 4 + _content_tokens(message.get("content"))
    if message.get("tool_calls"):
        total += count_tokens(json.dumps(message["tool_calls"]))
    return total


def chat_prompt_tokens(messages: list[Any], tools: Any = None) -> int:
    total = 3 + sum(_message_tokens(message) for message in messages)
    if tools:
        total += count_tokens(json.dumps(tools))
    return total


PROMPT_CACHE_TTL_S = 300.0
PROMPT_CACHE_MAX_ENTRIES = 50_000


class PromptCache:
    """Leading messages seen recently per (organisation, model), and when: what a later request reuses."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str, str], float] = {}

    def cached_tokens(self, scope: str, model: str, messages: list[Any], now: float) -> int:
        """Tokens of the longest leading run of messages (all but the last) seen within the TTL."""
        prefixes = _prefix_digests(messages)
        cached = 0
        for length in range(len(messages) - 1, 0, -1):
            seen_at = self._seen.get((scope, model, prefixes[length - 1]))
            if seen_at is not None and now - seen_at <= PROMPT_CACHE_TTL_S:
                cached = sum(_message_tokens(message) for message in messages[:length])
                break
        self._remember(scope, model, prefixes, now)
        return cached

    def _remember(self, scope: str, model: str, prefixes: list[str], now: float) -> None:
        if len(self._seen) + len(prefixes) > PROMPT_CACHE_MAX_ENTRIES:
            self._seen = {k: at for k, at in self._seen.items() if now - at <= PROMPT_CACHE_TTL_S}
            if len(self._seen) + len(prefixes) > PROMPT_CACHE_MAX_ENTRIES:
                self._seen.clear()
        for digest in prefixes:
            self._seen[(scope, model, digest)] = now


def _prefix_digests(messages: list[Any]) -> list[str]:
    """One digest per leading run of messages: of messages[:1], messages[:2], ..."""
    running = hashlib.sha256()
    digests = []
    for message in messages:
        running.update(json.dumps(message, sort_keys=True, default=str).encode())
        running.update(b"\x00")
        digests.append(running.copy().hexdigest())
    return digests


def text_prompt_tokens(prompt: Any) -> int:
    if isinstance(prompt, list):
        return sum(count_tokens(str(p)) for p in prompt)
    return count_tokens(str(prompt))


@dataclass(slots=True)
class OutputShape:
    """Test and benchmark knobs for the size and pace of a reply (headers or a body "simulate" object)."""

    output_tokens: int | None = None  # reply length in tokens instead of the fixed sentence
    output_bytes: int | None = None  # large-output mode: exactly this many bytes of content
    chunk_bytes: int = 4096  # content bytes per SSE event in large-output mode
    chunk_delay_s: float = 0.0  # pause between SSE events

    @classmethod
    def from_request(cls, headers: dict[bytes, bytes], body: dict[str, Any]) -> OutputShape:
        options = body.get("simulate") if isinstance(body.get("simulate"), dict) else {}

        def pick(header: bytes, name: str) -> float | None:
            raw = headers.get(header)
            value = raw.decode() if raw is not None else options.get(name)
            return float(value) if value is not None else None

        tokens = pick(b"x-simulate-output-tokens", "output_tokens")
        size = pick(b"x-simulate-output-bytes", "output_bytes")
        chunk = pick(b"x-simulate-chunk-bytes", "chunk_bytes")
        delay = pick(b"x-simulate-chunk-delay-ms", "chunk_delay_ms")
        return cls(
            output_tokens=int(tokens) if tokens is not None else None,
            output_bytes=int(size) if size is not None else None,
            chunk_bytes=max(1, int(chunk)) if chunk is not None else 4096,
            chunk_delay_s=(delay or 0.0) / 1000.0,
        )


DEFAULT_SHAPE = OutputShape()


@dataclass(slots=True)
class Reply:
    """Everything about one completion, decided before the first byte is sent."""

    id: str
    created: int
    model: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    tokens: list[str]  # content tokens (empty in large-output mode or for a tool call)
    big_bytes: int = 0  # large-output mode: content length in bytes
    tool_call: dict[str, Any] | None = None
    seed: int = 0
    cached_tokens: int = 0  # of prompt_tokens, served from the prompt cache

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def content(self) -> str:
        if self.big_bytes:
            return lorem(self.big_bytes)
        return "".join(self.tokens)

    def usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "cached_tokens": self.cached_tokens,
        }


def lorem(size: int) -> str:
    return (LOREM * (size // len(LOREM) + 1))[:size]


def plan_reply(
    model: str, prompt_tokens: int, max_tokens: int | None, shape: OutputShape, now: float | None = None
) -> Reply:
    """Decide the reply's tokens and finish reason (large-output mode ignores max_tokens)."""
    created = int(now if now is not None else time.time())
    seed = random.getrandbits(63)
    if shape.output_bytes is not None:
        size = max(0, shape.output_bytes)
        return Reply(
            wire.completion_id(),
            created,
            model,
            prompt_tokens,
            math.ceil(size / 4) + 1,
            "stop",
            [],
            big_bytes=size,
            seed=seed,
        )
    natural = shape.output_tokens if shape.output_tokens is not None else len(REPLY)
    tokens = [REPLY[i % len(REPLY)] for i in range(natural)]
    if max_tokens is not None and max_tokens < natural + 1:
        tokens = tokens[:max_tokens]
        return Reply(
            wire.completion_id(), created, model, prompt_tokens, len(tokens), "length", tokens, seed=seed
        )
    return Reply(wire.completion_id(), created, model, prompt_tokens, natural + 1, "stop", tokens, seed=seed)


def plan_tool_call(model: str, prompt_tokens: int, tool: dict[str, Any], now: float | None = None) -> Reply:
    function = tool.get("function") or {}
    arguments = json.dumps(example_arguments(function.get("parameters") or {}))
    call = {
        "id": wire.tool_call_id(),
        "type": "function",
        "function": {"name": function.get("name", ""), "arguments": arguments},
    }
    completion = count_tokens(function.get("name", "")) + count_tokens(arguments) + 6
    created = int(now if now is not None else time.time())
    return Reply(
        wire.completion_id(),
        created,
        model,
        prompt_tokens,
        completion,
        "tool_calls",
        [],
        tool_call=call,
        seed=random.getrandbits(63),
    )


def example_arguments(schema: dict[str, Any]) -> dict[str, Any]:
    """Deterministic arguments that satisfy a JSON schema's required properties."""
    properties = schema.get("properties") or {}
    return {name: _example_value(properties.get(name) or {}) for name in schema.get("required") or []}


def _example_value(schema: dict[str, Any]) -> Any:
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind in ("integer", "number"):
        return 0
    if kind == "boolean":
        return False
    if kind == "array":
        return []
    if kind == "object":
        return example_arguments(schema)
    return "example"


def chosen_tool(body: dict[str, Any]) -> dict[str, Any] | None:
    """The tool to call: tools given, tool_choice not "none", and the last message is not a tool result."""
    tools = body.get("tools")
    choice = body.get("tool_choice", "auto")
    if not tools or not isinstance(tools, list) or choice == "none":
        return None
    messages = body.get("messages") or []
    if messages and isinstance(messages[-1], dict) and messages[-1].get("role") == "tool":
        return None
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        for tool in tools:
            if isinstance(tool, dict) and (tool.get("function") or {}).get("name") == name:
                return tool
    return tools[0] if isinstance(tools[0], dict) else None


def chat_completion(reply: Reply) -> bytes:
    message: dict[str, Any] = {"role": "assistant", "content": reply.content(), "tool_calls": []}
    if reply.tool_call is not None:
        message = {"role": "assistant", "content": None, "tool_calls": [{"index": 0, **reply.tool_call}]}
    return wire.dumps(
        {
            "id": reply.id,
            "object": "chat.completion",
            "created": reply.created,
            "model": reply.model,
            "prompt": [],
            "choices": [
                {
                    "finish_reason": reply.finish_reason,
                    "seed": reply.seed,
                    "logprobs": None,
                    "index": 0,
                    "message": message,
                }
            ],
            "usage": reply.usage(),
        }
    )


def chat_completion_dict(reply: Reply) -> dict[str, Any]:
    return json.loads(chat_completion(reply))


def text_completion(reply: Reply) -> bytes:
    return wire.dumps(
        {
            "id": reply.id,
            "object": "text.completion",
            "created": reply.created,
            "model": reply.model,
            "prompt": [],
            "choices": [
                {
                    "text": reply.content(),
                    "finish_reason": reply.finish_reason,
                    "seed": reply.seed,
                    "logprobs": None,
                    "index": 0,
                }
            ],
            "usage": reply.usage(),
        }
    )


def embedding_vector(text: str, dim: int) -> list[float]:
    """A unit vector derived from the text, so equal inputs embed equally."""
    seed = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")
    rng = random.Random(seed)
    raw = [rng.random() - 0.5 for _ in range(dim)]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [round(x / norm, 6) for x in raw]


def embeddings(model: CatalogModel, inputs: list[str]) -> tuple[bytes, int]:
    tokens = sum(count_tokens(text) for text in inputs)
    data = [
        {"object": "embedding", "embedding": embedding_vector(text, model.embedding_dim or 768), "index": i}
        for i, text in enumerate(inputs)
    ]
    usage = {"prompt_tokens": tokens, "completion_tokens": 0, "total_tokens": tokens}
    return wire.dumps({"object": "list", "model": model.id, "data": data, "usage": usage}), tokens


def relevance(query: str, document: str) -> float:
    """A rerank score in [0, 1): the share of query words the document contains, nudged by a hash."""
    words = set(query.lower().split())
    found = set(document.lower().split())
    overlap = len(words & found) / len(words) if words else 0.0
    nudge = int.from_bytes(hashlib.blake2b(f"{query}\0{document}".encode(), digest_size=2).digest(), "big")
    return round(overlap * 0.9 + nudge / 65536 * 0.09, 6)


# A 1x1 transparent PNG: enough for clients that decode b64_json.
_PNG_1X1 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="


def image_generation(model: str, n: int, response_format: str, host: str) -> bytes:
    image_id = wire.completion_id()
    data: list[dict[str, Any]] = []
    for i in range(n):
        if response_format in ("base64", "b64_json"):  # together SDK says base64, openai b64_json
            data.append({"index": i, "b64_json": _PNG_1X1, "type": "b64_json"})
        else:
            data.append({"index": i, "url": f"http://{host}/_sim/images/{image_id}-{i}.png", "type": "url"})
    return wire.dumps({"id": image_id, "model": model, "object": "list", "data": data})


PNG_BYTES_B64 = _PNG_1X1
