"""Run the simulator in a background thread on a free loopback port, for tests and benchmarks.

    with run_simulator(keys=["k1"]) as sim:
        client = OpenAI(base_url=sim.base_url, api_key="k1")   # http://127.0.0.1:PORT/v1
        sim.set_credits(0)        # every billed call now answers 402
        sim.reset()               # forget files, jobs, batches, budgets; back to the start scenario

Control goes through the /_sim endpoints, so it runs on the server's own event loop, never racing a
request. `sim.state` is there for reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx

from together_dash.simulator.app import SimulatorApp
from together_dash.simulator.scenario import Scenario
from together_dash.simulator.server import bind_socket, make_server
from together_dash.simulator.state import SimulatorState


class RunningSimulator:
    """A simulator serving on loopback in a daemon thread."""

    def __init__(self, scenario: Scenario | None = None, host: str = "127.0.0.1") -> None:
        self.app = SimulatorApp(SimulatorState(scenario))
        self.state = self.app.state
        self._socket = bind_socket(host, 0)
        self.port: int = self._socket.getsockname()[1]
        self.root_url = f"http://{host}:{self.port}"
        self.base_url = f"{self.root_url}/v1"
        self._server = make_server(self.app, host, self.port, loop="none", configure_logging=False)
        self._thread = threading.Thread(target=self._run, name=f"together-simulator-{self.port}", daemon=True)
        self._control = httpx.Client(base_url=self.root_url, timeout=10.0)

    def _run(self) -> None:
        if importlib.util.find_spec("uvloop") is not None:
            import uvloop

            loop = uvloop.new_event_loop()
        else:
            loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._server.serve(sockets=[self._socket]))
        finally:
            loop.close()

    def start(self, timeout: float = 5.0) -> RunningSimulator:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the Together simulator did not start")
            time.sleep(0.002)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5.0)
        self._control.close()
        with contextlib.suppress(OSError):
            self._socket.close()

    # --- runtime control (the /_sim endpoints) ------------------------------------------------------
    def control(self, path: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        response = self._control.post(f"/_sim/{path}", json=payload or {})
        response.raise_for_status()
        return response.json()

    def reset(self, **scenario: Any) -> None:
        """Forget all state; scenario fields given here apply on top of the startup scenario."""
        self.control("reset", scenario)

    def set_scenario(self, **fields: Any) -> None:
        """Change some scenario fields for the rest of the run (until the next reset)."""
        self.control("scenario", fields)

    def set_credits(self, calls: int | None) -> None:
        """Billed calls left before every billed call answers 402; None for unlimited."""
        self.control("credits", {"calls": calls})

    def add_credits(self, calls: int) -> None:
        self.control("credits", {"add": calls})

    def revoke(self, key: str, revoked: bool = True) -> None:
        self.control("revoke", {"key": key, "revoked": revoked})

    def freeze_clock(self, at: float | None = None) -> None:
        """Stop simulated time (at `at`, unix seconds, or now): only advance() moves it from then on."""
        self.control("clock", {"freeze": True, "at": at})

    def advance(self, seconds: float) -> None:
        self.control("clock", {"advance_s": seconds})

    def summary(self) -> dict[str, Any]:
        return self._control.get("/_sim/state").json()


def _scenario(scenario: Scenario | dict[str, Any] | None, fields: dict[str, Any]) -> Scenario:
    if isinstance(scenario, dict):
        scenario = Scenario.from_dict(scenario)
    return Scenario.from_dict(fields, base=scenario) if fields else (scenario or Scenario())


def start_simulator(scenario: Scenario | dict[str, Any] | None = None, **fields: Any) -> RunningSimulator:
    """Start a simulator (scenario fields as keyword arguments, e.g. keys=["k1"]); call stop() when done."""
    return RunningSimulator(_scenario(scenario, fields)).start()


@contextlib.contextmanager
def run_simulator(
    scenario: Scenario | dict[str, Any] | None = None, **fields: Any
) -> Iterator[RunningSimulator]:
    """A running simulator for the duration of the block."""
    simulator = start_simulator(scenario, **fields)
    try:
        yield simulator
    finally:
        simulator.stop()
