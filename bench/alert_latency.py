"""Alert latency: time from the first 402 through the proxy to the billing email at the SMTP server.

Starts the simulator, the dashboard (uvicorn: proxy + web), a Celery worker on the same broker (the
filesystem broker in the run's temporary var dir, or CELERY_BROKER_URL when set) and an aiosmtpd server
on loopback, as separate processes. Sends one chat completion with `X-Simulate: 402` through the proxy
with an app key and waits for the email. Target (DESIGN.md): <= 10 s.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from aiosmtpd.controller import Controller

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import PYTHON, ROOT, Dashboard, Simulator, free_port, write_results  # noqa: E402

TARGET_SECONDS = 10.0
RECIPIENT = "billing-owner@example.com"


class Inbox:
    """Records when each message arrived (monotonic clock, the same one the sender reads)."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[float, str]] = []
        self.arrived = threading.Event()

    async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:  # noqa: N802
        subject = next((line for line in envelope.content.decode(errors="replace").splitlines()
                        if line.startswith("Subject:")), "")
        self.arrivals.append((time.monotonic(), subject))
        self.arrived.set()
        return "250 OK"


class Worker:
    """`celery -A together_dash worker` as in the Procfile, with the dashboard's environment."""

    def __init__(self, env: dict[str, str]) -> None:
        self.ready = threading.Event()
        self.process = subprocess.Popen(
            [PYTHON, "-m", "celery", "-A", "together_dash", "worker", "--concurrency=2", "--without-mingle",
             "--without-gossip", "--loglevel=INFO"],
            cwd=ROOT, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
        )
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            if " ready." in line:
                self.ready.set()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()


def measure(dash: Dashboard, inbox: Inbox, key: str, timeout: float) -> dict[str, Any]:
    messages = [{"role": "user", "content": "hi"}]
    body = {"model": "meta-llama/Llama-3.3-70B-Instruct-Turbo", "messages": messages}
    headers = {"Authorization": f"Bearer {key}", "X-Simulate": "402"}
    started = time.monotonic()
    response = httpx.post(f"{dash.base_url}/chat/completions", json=body, headers=headers, timeout=30)
    answered = time.monotonic()
    inbox.arrived.wait(timeout)
    if not inbox.arrivals:
        return {"status": response.status_code, "email_arrived": False, "timeout_s": timeout}
    arrival, subject = inbox.arrivals[0]
    return {
        "status": response.status_code,
        "email_arrived": True,
        "proxy_response_s": round(answered - started, 4),
        "first_402_to_email_s": round(arrival - started, 3),
        "subject": subject,
        "emails": len(inbox.arrivals),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=60.0, help="give up waiting for the email after N s")
    args = parser.parse_args()
    inbox = Inbox()
    smtp = Controller(inbox, hostname="127.0.0.1", port=free_port())
    smtp.start()
    env = {"EMAIL_URL": f"smtp://127.0.0.1:{smtp.port}", "ALERT_EMAILS": RECIPIENT}
    worker: Worker | None = None
    try:
        with Simulator() as sim, Dashboard(upstream=sim.base_url, env=env) as dash:
            key = dash.create_app_key("bench-alerts")
            worker = Worker(dash.env)
            if not worker.ready.wait(60):
                raise RuntimeError("the Celery worker did not start")
            results = measure(dash, inbox, key, args.timeout)
            time.sleep(2)  # a second email (a duplicate) would arrive by now
            results["emails"] = len(inbox.arrivals)
    finally:
        if worker is not None:
            worker.stop()
        smtp.stop()
    latency = results.get("first_402_to_email_s")
    results["target_s"] = TARGET_SECONDS
    results["target_met"] = latency is not None and latency <= TARGET_SECONDS and results["emails"] == 1
    proxy_s = results.get("proxy_response_s")
    results["figures"] = [
        {
            "figure": "first 402 through the proxy -> email at the SMTP server (s)",
            "value": latency,
            "baseline": proxy_s,
            "ratio": latency / proxy_s if latency is not None and proxy_s else None,
            "target": f"<= {TARGET_SECONDS:g} s",
            "meets_target": latency is not None and latency <= TARGET_SECONDS,
        },
        {
            "figure": "emails for one 402",
            "value": results["emails"],
            "baseline": None,
            "ratio": None,
            "target": "1",
            "meets_target": results["emails"] == 1,
        },
    ]
    verdict = "met" if results["target_met"] else "MISSED"
    print(f"first 402 -> email at the SMTP server: {latency} s (target <= {TARGET_SECONDS} s): {verdict}; "
          f"emails received: {results['emails']}")
    path = write_results("alert_latency", results)
    print(f"wrote {path}")
    if not results.get("email_arrived"):
        raise SystemExit("no alert email arrived")


if __name__ == "__main__":
    main()
