"""Run by .venv-sdk2's Python (together 2.x): the SDK's calls through the proxy, results as JSON lines.

    .venv-sdk2/bin/python tests/proxy/sdk2_driver.py BASE_URL API_KEY WORKDIR

together 2.x takes the base URL with /v1, like the OpenAI SDK. Each call prints one line
{"call", "ok", "detail"}; tests/proxy/test_sdk2.py reads them and checks the proxy's request logs.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import together

MODEL = "meta-llama/Meta-Llama-3.1-8B-Instruct-Turbo"
MESSAGES = [{"role": "user", "content": "Say hello."}]


def calls(client: together.Together, workdir: Path) -> dict[str, object]:
    results: dict[str, object] = {"version": together.__version__}
    completion = client.chat.completions.create(model=MODEL, messages=MESSAGES)
    results["chat"] = bool(completion.choices[0].message.content)
    chunks = list(client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True))
    results["stream"] = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) != ""
    results["whoami"] = bool(client.whoami())
    training = workdir / "train.jsonl"
    line = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}
    training.write_text((json.dumps(line) + "\n") * 16)
    uploaded = client.files.upload(training, purpose="fine-tune", check=True)
    results["file"] = uploaded.id
    job = client.fine_tuning.create(training_file=uploaded.id, model=MODEL)
    results["fine_tune"] = job.id
    results["fine_tune_status"] = str(client.fine_tuning.retrieve(job.id).status)
    batch_input = workdir / "batch.jsonl"
    request = {"custom_id": "r0", "body": {"model": MODEL, "messages": MESSAGES, "max_tokens": 5}}
    batch_input.write_text(json.dumps(request) + "\n")
    batch_file = client.files.upload(batch_input, purpose="batch-api", check=False)
    batch = client.batches.create(endpoint="/v1/chat/completions", input_file_id=batch_file.id)
    results["batch"] = getattr(batch, "id", None) or getattr(getattr(batch, "job", None), "id", None)
    return results


def main() -> None:
    base_url, api_key, workdir = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    client = together.Together(base_url=base_url, api_key=api_key, max_retries=0, timeout=30)
    print(json.dumps(calls(client, workdir)))


if __name__ == "__main__":
    main()
