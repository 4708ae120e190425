"""LiteLLM's proxy against ours: the same calls direct to the simulator, through ours and through LiteLLM.

Starts one simulator, our dashboard (uvicorn, one worker, as in the Procfile) and LiteLLM's proxy from
.venv-litellm (`make .venv-litellm/.stamp`; one worker, its default), both routing the simulator's chat
model to the simulator. LiteLLM runs offline: local model cost map, telemetry off, no Hugging Face
tokenizer download, no database (a master key generated for the run). Interleaved in the same run, so
that drift hits all three alike, it measures:
  - sequential non-stream chat completions (direct, ours, LiteLLM in turn): p50/p95/p99
  - 16 and 64 concurrent clients, in alternating rounds: p50/p95/p99 added over direct
  - sequential streams: time to the first event (TTFT)
  - CPU time per request of each proxy process
Every proxied answer must be a 200 with a chat completion (a stream: a 200 with a body), or the run fails.
Targets (DESIGN.md): ours adds a median <= 1.5 ms sequentially and a p99 <= 25 ms at 64 concurrent.
Writes bench/results/proxy_peers.json with a "figures" list for BENCHMARKS.md.

    .venv/bin/python bench/proxy_peers.py [--sequential 1000] [--streams 300] [--per-client 50]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    ROOT,
    Dashboard,
    RawClient,
    Simulator,
    Timing,
    _Process,
    cpu_seconds,
    free_port,
    run_loop,
    summary_ms,
    write_results,
)

MODEL = "meta-llama/Meta-Llama-3.1-8B-Instruct-Turbo"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
STREAM = {**CHAT, "stream": True}
LITELLM_VENV = ROOT / ".venv-litellm"
LITELLM_START_TIMEOUT = 180.0  # seconds; it imports a great deal before it listens
TARGET_SEQUENTIAL_MEDIAN_MS = 1.5
TARGET_CONCURRENT_P99_MS = 25.0
LITELLM_REFERENCE_P99_MS = {16: 251, 64: 546}  # DESIGN.md: what LiteLLM adds in its own harness
ROUNDS = 5
PROXIES = ("ours", "litellm")


class LiteLLMProxy(_Process):
    """`litellm --config` from .venv-litellm on a free port, in a scratch folder, with nothing online."""

    def __init__(self, upstream: str) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="litellm-bench-"))
        self.key = f"sk-{secrets.token_hex(32)}"  # the master key clients send; no database behind it
        self.port = free_port()
        self.root_url = f"http://127.0.0.1:{self.port}"
        self.base_url = f"{self.root_url}/v1"
        self.log = self.folder / "litellm.log"
        config = self.folder / "config.yaml"
        config.write_text(json.dumps(litellm_config(upstream)))  # JSON is YAML
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [str(LITELLM_VENV / "bin" / "litellm"), "--config", str(config), "--host", "127.0.0.1",
                 "--port", str(self.port), "--num_workers", "1"],
                cwd=self.folder, env=litellm_env(self.key, self.folder), stdout=log, stderr=subprocess.STDOUT,
            )
        self._wait_until_live()

    def _wait_until_live(self) -> None:
        """Poll its liveness endpoint; if it dies or never answers, fail with the end of its log."""
        deadline = time.monotonic() + LITELLM_START_TIMEOUT
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if httpx.get(f"{self.root_url}/health/liveliness", timeout=2.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        tail = self.log_tail()
        self.stop()
        raise SystemExit(f"LiteLLM's proxy did not start (exit code {self.process.returncode}); "
                         f"its log ends:\n{tail}")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self.folder, ignore_errors=True)


def litellm_config(upstream: str) -> dict[str, Any]:
    """One model routed to the simulator as an OpenAI-compatible server; otherwise LiteLLM's defaults."""
    return {
        "model_list": [{
            "model_name": MODEL,
            "litellm_params": {
                "model": f"openai/{MODEL}",
                "api_base": upstream,
                "api_key": f"sim-{secrets.token_hex(16)}",  # the simulator takes any key
            },
        }],
        # Without a download it counts stream tokens with its bundled tiktoken instead of retrying the Hub.
        "litellm_settings": {"disable_hf_tokenizer_download": True},
    }


def litellm_env(master_key: str, home: Path) -> dict[str, str]:
    """A bare environment: nothing of ours (DATABASE_URL, REDIS_...) may switch on a LiteLLM feature."""
    return {
        "PATH": f"{LITELLM_VENV / 'bin'}:/usr/bin:/bin",
        "HOME": str(home),  # caches it writes go with the scratch folder
        "LITELLM_MASTER_KEY": master_key,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_TELEMETRY_DISABLED": "true",
        "HF_HUB_OFFLINE": "1",
    }


def litellm_version() -> str:
    code = "import importlib.metadata as m; print(m.version('litellm'))"
    result = subprocess.run([str(LITELLM_VENV / "bin" / "python"), "-c", code],
                            capture_output=True, text=True, check=True)
    return result.stdout.strip()


# ---- checking the answers ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    name: str
    base_url: str
    key: str

    def client(self) -> RawClient:
        return RawClient(self.base_url, self.key)


def check_completion(target: str, timing: Timing) -> None:
    """A 200 whose body is a chat completion with a message, or the run stops."""
    try:
        body = json.loads(timing.body)
        ok = body["object"] == "chat.completion" and isinstance(body["choices"][0]["message"]["content"], str)
    except (ValueError, KeyError, IndexError, TypeError):
        ok = False
    if timing.status != 200 or not ok:
        raise SystemExit(f"{target}: not a chat completion: status {timing.status}, "
                         f"body {timing.body[:300]!r}")


def check_stream_timing(target: str, timing: Timing) -> None:
    if timing.status != 200 or not timing.size:
        raise SystemExit(f"{target}: stream answered status {timing.status} with {timing.size} bytes")


def check_stream(target: Target) -> None:
    """One stream read whole: chat.completion.chunk events with text, then [DONE]."""
    headers = {"Authorization": f"Bearer {target.key}"}
    with httpx.stream("POST", f"{target.base_url}/chat/completions", json=STREAM, headers=headers,
                      timeout=30) as response:
        data = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    events = [json.loads(item) for item in data[:-1]]
    text = "".join(choice["delta"].get("content") or "" for event in events for choice in event["choices"])
    if (response.status_code != 200 or not data or data[-1] != "[DONE]" or not text
            or any(event["object"] != "chat.completion.chunk" for event in events)):
        raise SystemExit(f"{target.name}: not a chat completion stream: status {response.status_code}, "
                         f"{len(data)} events")


# ---- measuring ---------------------------------------------------------------------------------------

async def sequential(targets: list[Target], clients: list[RawClient], body: dict[str, Any], count: int,
                     *, stream: bool = False) -> dict[str, list[float]]:
    """Each target in turn, `count` times, one keep-alive connection each: drift hits all alike."""
    times: dict[str, list[float]] = {target.name: [] for target in targets}
    requests = [client.encode("POST", "/chat/completions", body) for client in clients]
    for _ in range(count):
        for target, client, raw in zip(targets, clients, requests, strict=True):
            timing = await client.send(raw)
            if stream:
                check_stream_timing(target.name, timing)
            else:
                check_completion(target.name, timing)
            times[target.name].append(timing.first_byte if stream else timing.total)
    return times


async def concurrent(target: Target, clients: int, per_client: int) -> list[float]:
    """`clients` connections, each sending `per_client` requests back to back."""
    async def one() -> list[float]:
        client = target.client()
        raw = client.encode("POST", "/chat/completions", CHAT)
        await client.connect()
        times = []
        for _ in range(per_client):
            timing = await client.send(raw)
            check_completion(target.name, timing)
            times.append(timing.total)
        await client.close()
        return times

    results = await asyncio.gather(*(one() for _ in range(clients)))
    return [t for times in results for t in times]


async def concurrent_rounds(targets: list[Target], clients: int, per_client: int) -> dict[str, list[float]]:
    """Alternating rounds, so that a busy moment of the machine hits every target alike."""
    for target in targets:  # warm up: connections, pools
        await concurrent(target, clients, 5)
    times: dict[str, list[float]] = {target.name: [] for target in targets}
    for _ in range(ROUNDS):
        for target in targets:
            times[target.name] += await concurrent(target, clients, max(1, per_client // ROUNDS))
    return times


def process_cpu(processes: dict[str, _Process]) -> dict[str, float]:
    return {name: sum(cpu_seconds(pid) for pid in process.pids) for name, process in processes.items()}


async def measure(targets: list[Target], processes: dict[str, _Process], args: argparse.Namespace
                  ) -> dict[str, Any]:
    clients = [target.client() for target in targets]
    await sequential(targets, clients, CHAT, 200)  # warm up: connections, key caches, lazy imports
    before = process_cpu(processes)
    seq = await sequential(targets, clients, CHAT, args.sequential)
    after = process_cpu(processes)
    # Each process's own CPU per request: unlike latency, it hardly moves when the machine is busy.
    cpu_ms = {name: (after[name] - before[name]) / args.sequential * 1000 for name in processes}
    cpu_ms["simulator"] /= len(targets)  # it answered every target's requests
    await sequential(targets, clients, STREAM, 20, stream=True)
    ttft = await sequential(targets, clients, STREAM, args.streams, stream=True)
    results: dict[str, Any] = {"cpu_ms_per_request": cpu_ms, "sequential": summaries(seq),
                               "ttft_stream": summaries(ttft)}
    for count in args.concurrency:
        results[f"concurrent_{count}"] = summaries(await concurrent_rounds(targets, count, args.per_client))
    return results


def summaries(times: dict[str, list[float]]) -> dict[str, Any]:
    """Percentiles per target, and what each proxy adds over direct."""
    result: dict[str, Any] = {name: summary_ms(values) for name, values in times.items()}
    for proxy in PROXIES:
        result[proxy]["added_ms"] = {stat: result[proxy][stat] - result["direct"][stat]
                                     for stat in ("p50", "p95", "p99")}
    return result


# ---- figures -----------------------------------------------------------------------------------------

def figure(name: str, value: float, baseline: float, target: str, met: bool | None = None) -> dict[str, Any]:
    """One row for BENCHMARKS.md; no ratio against a baseline of zero or less (noise around direct)."""
    return {"figure": name, "value": value, "baseline": baseline,
            "ratio": value / baseline if baseline > 0 else None, "target": target, "meets_target": met}


def peer_figures(results: dict[str, Any], concurrency: list[int]) -> list[dict[str, Any]]:
    seq, ttft, cpu = results["sequential"], results["ttft_stream"], results["cpu_ms_per_request"]
    ours_added = seq["ours"]["added_ms"]["p50"]
    return [
        figure("ours: sequential p50, ms (baseline: direct)", seq["ours"]["p50"], seq["direct"]["p50"],
               f"added median <= {TARGET_SEQUENTIAL_MEDIAN_MS:g} ms",
               ours_added <= TARGET_SEQUENTIAL_MEDIAN_MS),
        figure("LiteLLM: sequential p50, ms (baseline: direct)", seq["litellm"]["p50"], seq["direct"]["p50"],
               "reference: +4.3 ms (DESIGN.md)"),
        figure("LiteLLM added sequential p50 / ours, ms", seq["litellm"]["added_ms"]["p50"], ours_added,
               "comparison"),
        *(row for count in concurrency for row in concurrent_figures(count, results[f"concurrent_{count}"])),
        figure("LiteLLM added stream TTFT p50 / ours, ms", ttft["litellm"]["added_ms"]["p50"],
               ttft["ours"]["added_ms"]["p50"], "comparison"),
        figure("LiteLLM CPU per request / ours, ms", cpu["litellm"], cpu["ours"], "comparison"),
    ]


def concurrent_figures(count: int, pair: dict[str, Any]) -> list[dict[str, Any]]:
    """p99 at `count` clients: ours against its target (at 64), LiteLLM against DESIGN.md's reference."""
    ours_added = pair["ours"]["added_ms"]["p99"]
    target, met = "-", None
    if count == 64:
        target, met = f"added p99 <= {TARGET_CONCURRENT_P99_MS:g} ms", ours_added <= TARGET_CONCURRENT_P99_MS
    reference = f"reference: +{LITELLM_REFERENCE_P99_MS[count]} ms in LiteLLM's harness" \
        if count in LITELLM_REFERENCE_P99_MS else "-"
    return [
        figure(f"ours: {count} concurrent p99, ms (baseline: direct)", pair["ours"]["p99"],
               pair["direct"]["p99"], target, met),
        figure(f"LiteLLM: {count} concurrent p99, ms (baseline: direct)", pair["litellm"]["p99"],
               pair["direct"]["p99"], reference),
        figure(f"LiteLLM added p99 at {count} concurrent / ours, ms", pair["litellm"]["added_ms"]["p99"],
               ours_added, "comparison"),
    ]


def report(results: dict[str, Any]) -> None:
    print(f"{'measure':<16}{'stat':>6}{'direct ms':>11}{'ours ms':>10}{'LiteLLM ms':>12}"
          f"{'ours +':>9}{'LiteLLM +':>11}{'ratio':>8}")
    for name, row in results.items():
        if "direct" not in row:
            continue
        for stat in ("p50", "p95", "p99"):
            ours, litellm = row["ours"]["added_ms"][stat], row["litellm"]["added_ms"][stat]
            ratio = f"{litellm / ours:8.1f}" if ours > 0 else f"{'-':>8}"
            print(f"{name:<16}{stat:>6}{row['direct'][stat]:>11.3f}{row['ours'][stat]:>10.3f}"
                  f"{row['litellm'][stat]:>12.3f}{ours:>9.3f}{litellm:>11.3f}{ratio}")
    cpu = results["cpu_ms_per_request"]
    print(f"CPU per request: simulator {cpu['simulator']:.3f} ms, ours {cpu['ours']:.3f} ms, "
          f"LiteLLM {cpu['litellm']:.3f} ms (ratio {cpu['litellm'] / cpu['ours']:.1f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequential", type=int, default=1000)
    parser.add_argument("--streams", type=int, default=300)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--per-client", type=int, default=50)
    args = parser.parse_args()
    if not (LITELLM_VENV / "bin" / "litellm").exists():
        raise SystemExit("LiteLLM is not installed: run `make .venv-litellm/.stamp` first")
    with Simulator() as sim, Dashboard(upstream=sim.base_url, workers=1) as dash, \
            LiteLLMProxy(upstream=sim.base_url) as litellm:
        targets = [Target("direct", sim.base_url, "bench"),
                   Target("ours", dash.base_url, dash.create_app_key("bench")),
                   Target("litellm", litellm.base_url, litellm.key)]
        for target in targets:
            check_stream(target)
        results = run_loop(measure(targets, {"simulator": sim, "ours": dash, "litellm": litellm}, args))
        for target in targets:
            check_stream(target)
    report(results)
    figures = peer_figures(results, args.concurrency)
    path = write_results("proxy_peers", {"figures": figures, "results": results, "args": vars(args),
                                         "litellm_version": litellm_version()})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
