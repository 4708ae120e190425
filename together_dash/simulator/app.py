"""The simulator as a raw ASGI app: routing and the per-request pipeline.

The API is served at the root, each path carrying its version as together 3.x sends it (`/v1/...`,
`/v2/...`, `/v3/whoami`). Per API request: latency (scenario + `X-Simulate-Latency-Ms`), bearer auth,
an `X-Simulate` fault, then the endpoint handler. Every response carries `x-request-id`, `cf-ray` and
`x-total-time`. Raw ASGI rather than a framework: the simulator must never be what slows a benchmark.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable

from together_dash.simulator import (
    account,
    batches,
    billing,
    completions,
    control,
    endpoints,
    errors,
    faults,
    files,
    finetunes,
    wire,
)
from together_dash.simulator.faults import DropConnection
from together_dash.simulator.state import SimulatorState
from together_dash.simulator.wire import Receive, Request, Response, Scope, Send

logger = logging.getLogger("together_dash.simulator")

Handler = Callable[[SimulatorState, Request], Awaitable[Response]]

ROUTES: dict[tuple[str, str], Handler] = {
    ("GET", "/v1/models"): account.list_models,
    ("GET", "/v1/whoami"): account.whoami,
    ("GET", "/v3/whoami"): account.whoami_v3,
    ("GET", "/v2/supported-models"): account.list_supported,
    ("POST", "/v1/chat/completions"): completions.chat,
    ("POST", "/v1/completions"): completions.text,
    ("POST", "/v1/embeddings"): completions.embeddings,
    ("POST", "/v1/images/generations"): completions.images,
    ("POST", "/v1/rerank"): completions.rerank,
    ("GET", "/v1/files"): files.list_files,
    ("POST", "/v1/files"): files.upload,
    ("POST", "/v1/files/upload"): files.upload,
    ("GET", "/v1/fine-tunes"): finetunes.list_jobs,
    ("POST", "/v1/fine-tunes"): finetunes.create,
    ("GET", "/v1/fine-tunes/models/limits"): finetunes.limits,
    ("POST", "/v1/fine-tunes/estimate-price"): finetunes.estimate_price,
    ("GET", "/v1/batches"): batches.list_batches,
    ("POST", "/v1/batches"): batches.create,
    ("GET", "/v1/endpoints"): endpoints.list_endpoints,
    ("POST", "/v1/endpoints"): endpoints.create,
    ("GET", "/v1/hardware"): endpoints.list_hardware,
    ("GET", "/v2/public/inference-instance-types"): endpoints.list_instance_types,
    ("GET", "/v1/billing/usage"): billing.usage,
}

_ID = "([A-Za-z0-9._:-]+)"
PATTERNS: list[tuple[str, re.Pattern[str], Handler]] = [
    ("GET", re.compile(rf"^/v1/files/{_ID}$"), files.retrieve),
    ("DELETE", re.compile(rf"^/v1/files/{_ID}$"), files.delete),
    ("GET", re.compile(rf"^/v1/files/{_ID}/content$"), files.content),
    ("POST", re.compile(rf"^/v1/files/{_ID}/preprocess$"), files.preprocess),
    ("GET", re.compile(rf"^/v1/fine-tunes/{_ID}$"), finetunes.retrieve),
    ("DELETE", re.compile(rf"^/v1/fine-tunes/{_ID}$"), finetunes.delete),
    ("GET", re.compile(rf"^/v1/fine-tunes/{_ID}/events$"), finetunes.events),
    ("GET", re.compile(rf"^/v1/fine-tunes/{_ID}/checkpoints$"), finetunes.checkpoints),
    ("POST", re.compile(rf"^/v1/fine-tunes/{_ID}/cancel$"), finetunes.cancel),
    ("GET", re.compile(rf"^/v1/batches/{_ID}$"), batches.retrieve),
    ("POST", re.compile(rf"^/v1/batches/{_ID}/cancel$"), batches.cancel),
    ("GET", re.compile(rf"^/v1/endpoints/{_ID}$"), endpoints.retrieve),
    ("PATCH", re.compile(rf"^/v1/endpoints/{_ID}$"), endpoints.update),
    ("DELETE", re.compile(rf"^/v1/endpoints/{_ID}$"), endpoints.delete),
    ("GET", re.compile(r"^/v2/supported-models/(.+)$"), account.retrieve_supported),
    ("GET", re.compile(rf"^/v2/projects/{_ID}/models$"), account.list_project_models),
    ("GET", re.compile(rf"^/v2/projects/{_ID}/endpoints$"), endpoints.v2_list),
    ("GET", re.compile(rf"^/v2/projects/{_ID}/endpoints/{_ID}$"), endpoints.v2_retrieve),
    ("PATCH", re.compile(rf"^/v2/projects/{_ID}/endpoints/{_ID}$"), endpoints.v2_update),
    ("DELETE", re.compile(rf"^/v2/projects/{_ID}/endpoints/{_ID}$"), endpoints.v2_delete),
]


def resolve(method: str, path: str) -> tuple[Handler, tuple[str, ...]] | None:
    handler = ROUTES.get((method, path))
    if handler is not None:
        return handler, ()
    for route_method, pattern, handler in PATTERNS:
        if route_method == method:
            match = pattern.match(path)
            if match:
                return handler, match.groups()
    return None


def bearer_key(value: bytes | None) -> str:
    if not value:
        return ""
    scheme, _, key = value.decode("latin-1").partition(" ")
    return key.strip() if scheme.lower() == "bearer" else ""


async def _not_found(state: SimulatorState, request: Request) -> Response:
    return Response(404, errors.not_found(f"Unknown endpoint {request.method} {request.path}"))


class SimulatorApp:
    """The ASGI callable; `state` is public so in-process tests can look inside."""

    def __init__(self, state: SimulatorState | None = None) -> None:
        self.state = state or SimulatorState()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await _lifespan(receive, send)
            return
        started = time.perf_counter()
        request = Request(scope, receive, send)
        if request.path.startswith("/_sim/"):
            await request.read_body()
            await wire.send_response(send, receive, await control.handle(self.state, request), [])
            return
        try:
            response = await self._respond(request)
            extra = [
                (b"x-request-id", wire.request_id().encode()),
                (b"cf-ray", wire.cf_ray().encode()),
                (b"x-total-time", f"{(time.perf_counter() - started) * 1000:.1f}".encode()),
            ]
            await wire.send_response(send, receive, response, extra)
        except DropConnection:
            await _drop_connection(send)

    async def _respond(self, request: Request) -> Response:
        state = self.state
        latency = state.scenario.latency_ms
        extra = request.headers.get(b"x-simulate-latency-ms")
        if extra is not None:
            latency += _float(extra)
        if latency > 0:
            await asyncio.sleep(latency / 1000.0)
        key = bearer_key(request.headers.get(b"authorization"))
        if not state.key_accepted(key):
            return Response(401, errors.invalid_api_key())
        request.key = key
        fault = request.headers.get(b"x-simulate")
        if fault:
            simulated = await faults.simulate(state, request, fault.decode("latin-1"))
            if simulated is not None:
                return simulated
        route = resolve(request.method, request.path)
        handler, request.params = route if route is not None else (_not_found, ())
        await request.read_body()
        try:
            return await handler(state, request)
        except ValueError as exc:  # malformed JSON or a body of the wrong shape
            return Response(400, errors.invalid_request(f"Invalid request body: {exc}"))
        except Exception:
            logger.exception("simulator handler failed for %s %s", request.method, request.path)
            return Response(500, errors.server_error(500))


def _float(raw: bytes) -> float:
    try:
        return max(0.0, float(raw))
    except ValueError:
        return 0.0


async def _drop_connection(send: Send) -> None:
    """Abort the TCP connection so the client sees a reset, not a response.

    uvicorn passes a bound method of its per-request cycle as `send`; the cycle holds the transport.
    After abort() the server notices the disconnect and sends nothing. Servers without that shape
    get a response cut short instead, which clients also see as a broken connection.
    """
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is not None:
        transport.abort()
        for _ in range(3):  # let connection_lost run, so the server knows the client is gone
            await asyncio.sleep(0)
        return
    with contextlib.suppress(Exception):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"100")]})
        await send({"type": "http.response.body", "body": b"{", "more_body": True})
    raise ConnectionAbortedError("simulated connection reset")


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def create_app(state: SimulatorState | None = None) -> SimulatorApp:
    return SimulatorApp(state)
