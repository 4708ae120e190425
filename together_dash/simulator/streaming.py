"""Server-sent events exactly as Together frames them (REC recordings, reference §1.4).

Each event is `data: <compact json>\\n\\n`; every chunk has `usage: null` except the last one, which
carries the finish reason and the usage; then `data: [DONE]\\n\\n`. Every delta names its role, text
completions included; a text-completion chunk also carries `token` and a top-level `finish_reason`,
which the document requires and together 3.x's `CompletionChunk` reads. Chunks are produced one by one
(an async generator), so a 50 MB reply never exists in memory at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from together_dash.simulator import wire
from together_dash.simulator.faults import DropConnection
from together_dash.simulator.inference import EOT_TOKEN_ID, REPLY, REPLY_TOKEN_IDS, OutputShape, Reply, lorem

DONE = b"data: [DONE]\n\n"
_TOKEN_IDS = dict(zip(REPLY, REPLY_TOKEN_IDS, strict=True))


def _event(data: dict[str, Any]) -> bytes:
    return b"data: " + wire.dumps(data) + b"\n\n"


class _Frames:
    """Pre-rendered pieces of one stream's chunk JSON, so each token costs two small dumps."""

    def __init__(self, reply: Reply, object_: str, chat: bool) -> None:
        self.reply = reply
        self.object = object_
        self.chat = chat
        self.head = (
            f'data: {{"id":"{reply.id}","object":"{object_}","created":{reply.created},'
            '"choices":[{"index":0,"text":'
        ).encode()
        self.tail = b'}}],"model":' + wire.dumps(reply.model) + b',"usage":null'
        # Text completions also carry the token and the finish reason at the top (document and SDKs).
        self.end = b',"finish_reason":null}\n\n' if not chat else b"}\n\n"

    def token(self, text: str, token_id: int | None) -> bytes:
        encoded = wire.dumps(text)
        tid = b"null" if token_id is None else str(token_id).encode()
        parts = [
            self.head,
            encoded,
            b',"logprobs":null,"finish_reason":null,"seed":null,"delta":{"token_id":',
            tid,
            b',"role":"assistant","content":',
            encoded,
            self.tail,
        ]
        if not self.chat:
            parts += [b',"token":', wire.dumps(_token(text, token_id))]
        parts.append(self.end)
        return b"".join(parts)

    def final(self, text: str, token_id: int | None) -> bytes:
        reply = self.reply
        data: dict[str, Any] = {
            "id": reply.id,
            "object": self.object,
            "created": reply.created,
            "choices": [
                {
                    "index": 0,
                    "text": text,
                    "logprobs": None,
                    "finish_reason": reply.finish_reason,
                    "seed": reply.seed,
                    "delta": {"token_id": token_id, "role": "assistant", "content": text},
                }
            ],
            "model": reply.model,
            "usage": reply.usage(),
        }
        if not self.chat:
            data["token"] = _token(text, token_id, special=token_id == EOT_TOKEN_ID)
            data["finish_reason"] = reply.finish_reason
            data["seed"] = reply.seed
        return _event(data)


def _token(text: str, token_id: int | None, special: bool = False) -> dict[str, Any]:
    """A text-completion chunk's `token`; large-output chunks, which are not one token, get id 0."""
    return {"id": token_id or 0, "text": text, "logprob": 0, "special": special}


async def completion_events(
    reply: Reply, shape: OutputShape, *, chat: bool = True, fault: str = ""
) -> AsyncIterator[bytes]:
    """The SSE events of a chat (or text) completion, ending with [DONE]."""
    frames = _Frames(reply, "chat.completion.chunk" if chat else "completion.chunk", chat)
    delay = shape.chunk_delay_s
    pieces = _Repeated(frames, reply.big_bytes, shape.chunk_bytes) if reply.big_bytes else None
    count = len(pieces) if pieces is not None else len(reply.tokens)
    fault_at = count // 2 if fault else -1
    last_carries_finish = reply.finish_reason == "length" and count > 0  # no end-of-turn token then

    for i in range(count):
        if i == fault_at:
            async for event in _midstream_fault(fault):
                yield event
            return
        if pieces is not None:
            event = pieces[i]
        else:
            text = reply.tokens[i]
            if last_carries_finish and i == count - 1:
                yield frames.final(text, _TOKEN_IDS.get(text))
                yield DONE
                return
            event = frames.token(text, _TOKEN_IDS.get(text))
        yield event
        if delay:
            await asyncio.sleep(delay)
    if fault_at == 0:  # nothing to stream before the fault
        async for event in _midstream_fault(fault):
            yield event
        return
    yield frames.final("", EOT_TOKEN_ID)
    yield DONE


class _Repeated:
    """Large-output events of `chunk` content bytes each: one event rendered once and repeated."""

    def __init__(self, frames: _Frames, size: int, chunk: int) -> None:
        self._frames = frames
        self.chunk = chunk
        self.full, self.rest = divmod(size, chunk)
        self._full_event = b""
        self._rest_event = b""

    def __len__(self) -> int:
        return self.full + (1 if self.rest else 0)

    def __getitem__(self, index: int) -> bytes:
        if index < self.full:
            if not self._full_event:
                self._full_event = self._frames.token(lorem(self.chunk), None)
            return self._full_event
        if not self._rest_event:
            self._rest_event = self._frames.token(lorem(self.rest), None)
        return self._rest_event


async def _midstream_fault(fault: str) -> AsyncIterator[bytes]:
    if fault == "midstream-reset":
        raise DropConnection
    error = {
        "error": {"message": "Internal server error", "type": "server_error", "param": None, "code": None}
    }
    yield _event(error)


async def tool_call_events(reply: Reply) -> AsyncIterator[bytes]:
    """A streamed tool call, chunk for chunk as the REC tool-call recording shows it."""
    call = reply.tool_call or {}
    base = {"id": reply.id, "object": "chat.completion.chunk", "created": reply.created}
    empty_delta = {"token_id": None, "role": "assistant", "content": ""}

    def chunk(choice: dict[str, Any], usage: dict[str, int] | None = None) -> bytes:
        return _event({**base, "choices": [choice], "model": reply.model, "usage": usage})

    yield chunk(
        {
            "index": 0,
            "role": "assistant",
            "text": "",
            "logprobs": None,
            "finish_reason": None,
            "delta": empty_delta,
        }
    )
    header = {
        "index": 0,
        "id": call.get("id"),
        "type": "function",
        "function": {"name": call["function"]["name"], "arguments": ""},
    }
    yield chunk(
        {
            "index": 0,
            "text": "",
            "logprobs": None,
            "finish_reason": None,
            "delta": {**empty_delta, "tool_calls": [header]},
        }
    )
    arguments = {"index": 0, "function": {"arguments": call["function"]["arguments"]}}
    yield chunk(
        {
            "index": 0,
            "text": "",
            "logprobs": None,
            "finish_reason": "tool_calls",
            "delta": {**empty_delta, "tool_calls": [arguments]},
        }
    )
    yield chunk(
        {
            "index": 0,
            "text": "",
            "logprobs": None,
            "finish_reason": "tool_calls",
            "seed": reply.seed,
            "delta": {"token_id": EOT_TOKEN_ID, "role": "assistant", "content": ""},
        },
        reply.usage(),
    )
    yield DONE
