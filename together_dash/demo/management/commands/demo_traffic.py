"""python manage.py demo_traffic: a gentle, realistic mix of requests through the proxy, for demo mode.

Chat (some streamed), embeddings, the models list, now and then an unknown model or a context
overflow, and upstream faults at low rates (X-Simulate 429/500/503), a few requests a
second until Ctrl-C. It waits for the web server when it is not up yet.
"""
from __future__ import annotations

import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from together_dash.keys.audit import Actor
from together_dash.keys.lifecycle import rotate_issued_key
from together_dash.keys.models import AppKey, AuditLog, TogetherKey
from together_dash.keys.services import create_app_key

DEMO_KEY_NAME = "demo-traffic"
CHAT_MODELS = (
    "meta-llama/Llama-3.3-70B-Instruct-Turbo",
    "meta-llama/Meta-Llama-3.1-8B-Instruct-Turbo",
    "Qwen/Qwen2.5-7B-Instruct-Turbo",
    "deepseek-ai/DeepSeek-V3",
)
EMBEDDING_MODEL = "BAAI/bge-large-en-v1.5"
PROMPTS = (
    "Summarise yesterday's incident report in three bullet points.",
    "Write a friendly reply to a customer asking about a refund.",
    "Classify this ticket: 'the export button does nothing on Safari'.",
    "Translate 'the deployment is rolling back' into French.",
    "Suggest a name for a dashboard that watches API errors.",
)
SUMMARY_EVERY_SECONDS = 30.0


@dataclass(frozen=True)
class DemoRequest:
    """One request of the mix: what to send and what it stands for."""

    label: str
    method: str
    path: str
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def stream(self) -> bool:
        return bool(self.body and self.body.get("stream"))


def _chat(rng: random.Random, **extra: Any) -> dict[str, Any]:
    messages = [{"role": "user", "content": rng.choice(PROMPTS)}]
    return {"model": rng.choice(CHAT_MODELS), "messages": messages, "max_tokens": rng.choice((64, 128, 256)),
            **extra}


def _fault(rng: random.Random, fault: str) -> DemoRequest:
    headers = {"X-Simulate": fault}
    return DemoRequest(f"chat, upstream {fault}", "POST", "/chat/completions", _chat(rng), headers)


# (weight, maker): the mix a small product sends on an ordinary day, errors included.
MIX: tuple[tuple[float, Any], ...] = (
    (40, lambda rng: DemoRequest("chat", "POST", "/chat/completions", _chat(rng))),
    (14, lambda rng: DemoRequest("chat stream", "POST", "/chat/completions", _chat(rng, stream=True))),
    (8, lambda rng: DemoRequest("chat stream with usage", "POST", "/chat/completions",
                                _chat(rng, stream=True, stream_options={"include_usage": True}))),
    (15, lambda rng: DemoRequest("embeddings", "POST", "/embeddings",
                                 {"model": EMBEDDING_MODEL, "input": list(rng.sample(PROMPTS, 2))})),
    (4, lambda rng: DemoRequest("models list", "GET", "/models")),
    (3, lambda rng: DemoRequest("unknown model", "POST", "/chat/completions",
                                {**_chat(rng), "model": "meta-llama/Llama-5-Imaginary-Turbo"})),
    (2, lambda rng: DemoRequest("context overflow", "POST", "/chat/completions",
                                _chat(rng, max_tokens=10_000_000))),
    (6, lambda rng: _fault(rng, "429")),
    (3, lambda rng: _fault(rng, "500")),
    (3, lambda rng: _fault(rng, "503")),
    # No random 402s: each would fire and resolve the billing alert. Try it by hand with X-Simulate: 402.
)


def pick_request(rng: random.Random) -> DemoRequest:
    """One request drawn from the mix."""
    weights = [weight for weight, _ in MIX]
    (maker,) = rng.choices([maker for _, maker in MIX], weights=weights)
    return maker(rng)


def demo_app_key() -> str:
    """A fresh secret for the "demo-traffic" app key, creating the key on first use."""
    existing = AppKey.objects.filter(name=DEMO_KEY_NAME, status=AppKey.Status.ACTIVE).first()
    if existing is not None:
        # Only hashes are stored, so reuse means rotating: the row (and its history) stays the same.
        return rotate_issued_key(existing, Actor(via=AuditLog.Via.SYSTEM))
    upstream = TogetherKey.objects.filter(name="demo", status=TogetherKey.Status.ACTIVE).first()
    return create_app_key(DEMO_KEY_NAME, upstream=upstream, via=AuditLog.Via.SYSTEM)[1]


def send(client: httpx.Client, request: DemoRequest) -> int:
    """Send one request (reading a stream to its end); the status it got."""
    with client.stream(request.method, request.path, json=request.body, headers=request.headers) as response:
        for _ in response.iter_raw():
            pass
        return response.status_code


class Command(BaseCommand):
    help = "Send a gentle, realistic mix of requests through the proxy (demo mode), until Ctrl-C."

    def add_arguments(self, parser: CommandParser) -> None:
        port = os.environ.get("WEB_PORT", "8000")
        parser.add_argument("--base-url", default=f"http://127.0.0.1:{port}/v1", help="the proxy's base URL")
        parser.add_argument("--rate", type=float, default=3.0, help="average requests per second")
        parser.add_argument("--count", type=int, default=0,
                            help="stop after N requests (0: run until Ctrl-C)")
        parser.add_argument("--seed", type=int, default=None, help="random seed, for a repeatable mix")
        parser.add_argument("--force", action="store_true", help="run even when DEMO_MODE is off")

    def handle(self, *args: Any, **options: Any) -> None:
        if not (settings.DEMO_MODE or options["force"]):
            raise CommandError("demo_traffic sends fake traffic and only runs in demo mode (DEMO_MODE=true).")
        if options["rate"] <= 0:
            raise CommandError("--rate must be above 0.")
        key = demo_app_key()
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=options["base_url"], headers=headers, timeout=30.0) as client:
            try:
                self._run(client, random.Random(options["seed"]), options["rate"], options["count"])
            except KeyboardInterrupt:
                self.stdout.write("demo traffic stopped")

    def _run(self, client: httpx.Client, rng: random.Random, rate: float, count: int) -> None:
        tally: Counter[str] = Counter()
        sent, last_summary, waiting = 0, time.monotonic(), False
        while not count or sent < count:
            request = pick_request(rng)
            try:
                tally[f"{request.label} -> {send(client, request)}"] += 1
                sent, waiting = sent + 1, False
            except httpx.TransportError:
                if not waiting:
                    self.stdout.write(f"waiting for the proxy at {client.base_url} ...")
                waiting = True
                time.sleep(1.0)
                continue
            if time.monotonic() - last_summary >= SUMMARY_EVERY_SECONDS:
                self._summarise(tally)
                tally, last_summary = Counter(), time.monotonic()
            time.sleep(rng.expovariate(rate))
        self._summarise(tally)

    def _summarise(self, tally: Counter[str]) -> None:
        if tally:
            counts = ", ".join(f"{name} x{n}" for name, n in sorted(tally.items()))
            self.stdout.write(f"demo traffic: {counts}")
