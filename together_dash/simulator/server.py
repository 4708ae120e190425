"""Serve the simulator with uvicorn: httptools and uvloop when installed, no access log."""

from __future__ import annotations

import importlib.util
import socket

import uvicorn
from uvicorn.config import LOGGING_CONFIG

from together_dash.simulator.app import SimulatorApp
from together_dash.simulator.scenario import Scenario
from together_dash.simulator.state import SimulatorState


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def make_server(
    app: SimulatorApp,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    loop: str | None = None,
    configure_logging: bool = True,
) -> uvicorn.Server:
    """A uvicorn server for the app, tuned for throughput: no access log, no lifespan, no server header.

    In-process users (tests) pass configure_logging=False so uvicorn leaves the host's logging alone.
    """
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http="httptools" if _installed("httptools") else "h11",
        loop=loop or ("uvloop" if _installed("uvloop") else "asyncio"),
        lifespan="off",
        access_log=False,
        log_level="warning",
        log_config=LOGGING_CONFIG if configure_logging else None,
        server_header=False,
        timeout_graceful_shutdown=2,
        timeout_keep_alive=30,
        backlog=4096,
    )
    return uvicorn.Server(config)


def bind_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def serve(host: str = "127.0.0.1", port: int = 8001, scenario: Scenario | None = None) -> None:
    """Run the simulator in the foreground until interrupted."""
    app = SimulatorApp(SimulatorState(scenario))
    make_server(app, host, port).run()
