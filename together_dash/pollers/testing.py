"""Helpers for poller tests and benchmarks: upstream keys with random secrets, and work for the simulator."""
from __future__ import annotations

import dataclasses
import json
import secrets

import httpx

from together_dash.keys.models import TogetherKey
from together_dash.pollers.fanout import FanOutConfig
from together_dash.together.client import TogetherClient
from together_dash.together.types import BatchJob, FineTuneJob

FINETUNE_MODEL = "meta-llama/Meta-Llama-3.1-8B-Instruct-Turbo"
BATCH_MODEL = "meta-llama/Meta-Llama-3.1-8B-Instruct-Turbo"


def new_secret() -> str:
    """A fresh random secret: no key-shaped string is ever written into the repository."""
    return secrets.token_urlsafe(30)


def add_key(name: str) -> tuple[TogetherKey, str]:
    """An active upstream key and its secret (the simulator accepts any key unless told otherwise)."""
    secret = new_secret()
    return TogetherKey.create(name=name, secret=secret), secret


def start_fine_tune(
    client: TogetherClient, suffix: str = "", samples: int = 16, epochs: int = 2
) -> FineTuneJob:
    """Upload a conversational dataset of `samples` lines and start a fine-tune on it."""
    line = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}
    data = (json.dumps(line) + "\n").encode() * samples
    training = client.upload_file(data, purpose="fine-tune", file_name="train.jsonl").data
    params: dict[str, object] = {"model": FINETUNE_MODEL, "training_file": training.id, "n_epochs": epochs}
    if suffix:
        params["suffix"] = suffix
    return client.create_fine_tune(**params).data


def batch_lines(count: int, invalid: tuple[int, ...] = ()) -> list[dict[str, object]]:
    """Batch request lines r0..r{count-1}; the indexes in `invalid` ask for a model that does not exist."""
    lines = []
    for i in range(count):
        model = "no-such-org/no-such-model" if i in invalid else BATCH_MODEL
        body = {"model": model, "messages": [{"role": "user", "content": f"Question {i}"}], "max_tokens": 20}
        lines.append({"custom_id": f"r{i}", "body": body})
    return lines


def start_batch(client: TogetherClient, lines: list[dict[str, object]]) -> BatchJob:
    """Upload the lines as a batch-api file and start a batch on it."""
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    upload = client.upload_file(data, purpose="batch-api", file_name="batch.jsonl").data
    return client.create_batch(upload.id, "/v1/chat/completions").data


class SimulatedFault(httpx.AsyncBaseTransport):
    """The real HTTP transport, with every request asking the simulator for a fault (X-Simulate)."""

    def __init__(self, fault: str) -> None:
        self.fault = fault
        self.inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request.headers["X-Simulate"] = self.fault
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def fault_for_key(key_name: str, fault: str) -> FanOutConfig:
    """The poll configuration from settings, with every call of one key answered by a simulated fault."""
    return dataclasses.replace(
        FanOutConfig.from_settings(),
        transport=lambda key: SimulatedFault(fault) if key.name == key_name else None,
    )
