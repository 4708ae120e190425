"""Fine-tunes and batches started on the simulator, for the demo and for the pollers' tests."""
from __future__ import annotations

import json

from together_dash.together.client import TogetherClient
from together_dash.together.types import BatchJob, DedicatedEndpoint, FineTuneJob

FINETUNE_MODEL = "meta-llama/Meta-Llama-3.1-8B-Instruct-Turbo"
BATCH_MODEL = "meta-llama/Meta-Llama-3.1-8B-Instruct-Turbo"
IDLE_ENDPOINT_MODEL = "meta-llama/Meta-Llama-3.1-8B-Instruct-Turbo"
IDLE_ENDPOINT_HARDWARE = "1x_nvidia_a100_80gb_sxm"
IDLE_ENDPOINT_NAME = "Demo: forgotten endpoint"


def ensure_idle_endpoint(client: TogetherClient) -> DedicatedEndpoint | None:
    """A dedicated endpoint that nobody calls and that never stops by itself, unless one is listed already.

    It is what the endpoints page and its alerts are for: it bills by the minute with no traffic.
    Returns the endpoint created, or None when the account has one.
    """
    if any(e.display_name == IDLE_ENDPOINT_NAME for e in client.list_endpoints().data):
        return None
    return client.create_endpoint(
        model=IDLE_ENDPOINT_MODEL,
        hardware=IDLE_ENDPOINT_HARDWARE,
        display_name=IDLE_ENDPOINT_NAME,
        autoscaling={"min_replicas": 1, "max_replicas": 1},
        inactive_timeout=None,
    ).data


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
