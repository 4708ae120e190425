"""together 3.x (today's `pip install together`) through the proxy with only base_url and api_key changed.

Its base URL is the root: every resource path carries its own version (/v1, /v2, /v3). Each call must
be answered as the simulator answers it directly, and show up in /api/requests with its path.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import together
from django.core.management import call_command
from django.test import Client

from together_dash.keys.models import TogetherKey
from together_dash.keys.services import create_app_key
from together_dash.pollers.testing import new_secret
from together_dash.proxy.testing import RunningProxy, running_proxy
from together_dash.simulator.testing import RunningSimulator

MODEL = "meta-llama/Meta-Llama-3.1-8B-Instruct-Turbo"
MESSAGES = [{"role": "user", "content": "Say hello."}]


@pytest.fixture
def proxy(transactional_db: None, fresh_simulator: RunningSimulator) -> Iterator[RunningProxy]:
    with running_proxy(fresh_simulator.base_url) as running:
        yield running


@pytest.fixture
def client(proxy: RunningProxy) -> together.Together:
    TogetherKey.create(name="main", secret=new_secret())
    app_key = create_app_key("sdk3")[1]
    return together.Together(base_url=proxy.root_url, api_key=app_key, max_retries=0, timeout=30)


def logged_paths() -> set[tuple[str, str, int]]:
    """(method, endpoint, status) of every request, read back through the read API as ops would."""
    out = io.StringIO()
    call_command("create_api_token", "sdk3-check", stdout=out, stderr=io.StringIO())
    token = out.getvalue().split()[-1]
    answer = Client().get("/api/requests", {"limit": 200}, HTTP_AUTHORIZATION=f"Bearer {token}").json()
    return {(row["method"], row["endpoint"], row["status"]) for row in answer["items"]}


def test_together_3x_works_through_the_proxy_and_every_call_is_in_the_read_api(
    client: together.Together, proxy: RunningProxy, tmp_path: Path
) -> None:
    assert together.__version__.startswith("3.")
    assert client.chat.completions.create(model=MODEL, messages=MESSAGES).choices[0].message.content
    chunks = list(client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True))
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert client.whoami().type
    assert list(client.models.list_supported(product="PRODUCT_SERVERLESS"))
    training = tmp_path / "train.jsonl"
    line = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}
    training.write_text((json.dumps(line) + "\n") * 16)
    uploaded = client.files.upload(training, purpose="fine-tune")
    job = client.fine_tuning.create(training_file=uploaded.id, model=MODEL)
    assert client.fine_tuning.retrieve(job.id).id == job.id
    batch_input = tmp_path / "batch.jsonl"
    request = {"custom_id": "r0", "body": {"model": MODEL, "messages": MESSAGES, "max_tokens": 5}}
    batch_input.write_text(json.dumps(request) + "\n")
    batch_file = client.files.upload(batch_input, purpose="batch-api", check=False)
    client.batches.create(endpoint="/v1/chat/completions", input_file_id=batch_file.id)
    assert proxy.proxy.drain_logs()

    logged = logged_paths()
    assert {("POST", "/v1/chat/completions", 200), ("GET", "/v3/whoami", 200),
            ("GET", "/v2/supported-models", 200), ("POST", "/v1/files", 302),  # the upload's redirect
            ("POST", "/v1/fine-tunes", 200), ("GET", "/v1/fine-tunes/{id}", 200),
            ("POST", "/v1/batches", 201)} <= logged
    assert not [row for row in logged if row[2] >= 400]
