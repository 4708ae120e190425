"""Faults on demand for one request, through the `X-Simulate` header.

Values: 401 402 403 404 429 429-tokens 500 502 503 504 (each with Together's body), `timeout` (hang
until the client gives up, or `timeout_s` then 504), `reset` (drop the connection, no response),
`malformed` (200 with broken JSON), `html` (502 with an HTML page), and for streams
`midstream-error` (an error event after half the chunks) and `midstream-reset` (drop mid-stream).
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

from together_dash.simulator import catalog, errors
from together_dash.simulator.wire import JSON, Request, Response

if TYPE_CHECKING:
    from together_dash.simulator.state import SimulatorState

STREAM_FAULTS = frozenset({"midstream-error", "midstream-reset"})


class DropConnection(Exception):  # noqa: N818 - an instruction to the app, not an error condition
    """Tells the app to drop the connection without answering."""


def _rate_limited(kind: str) -> Response:
    headers = [
        (b"x-ratelimit-limit", b"60"),
        (b"x-ratelimit-remaining", b"0"),
        (b"x-ratelimit-reset", b"1.000"),
        (b"x-tokenlimit-limit", b"100000"),
        (b"x-tokenlimit-remaining", b"0" if kind == "dynamic_token_limited" else b"100000"),
    ]
    return Response(
        429, errors.rate_limited(kind, 60 if kind == "dynamic_request_limited" else 100000, 60), JSON, headers
    )


async def _requested_model(request: Request) -> str:
    await request.read_body()
    try:
        model = json.loads(request.body).get("model")
    except (ValueError, AttributeError):
        model = None
    return model if isinstance(model, str) and model else catalog.DEFAULT_CHAT_MODEL


async def _hang(request: Request, seconds: float) -> None:
    """Wait until the client disconnects or `seconds` pass, whichever is first."""

    async def until_disconnect() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    try:
        await asyncio.wait_for(until_disconnect(), seconds)
    except TimeoutError:
        pass


async def simulate(state: SimulatorState, request: Request, fault: str) -> Response | None:
    """The response for a requested fault, or None when the request should be served normally."""
    fault = fault.strip().lower()
    if fault in STREAM_FAULTS:
        return None  # applied by the streaming handlers
    if fault == "401":
        return Response(401, errors.invalid_api_key())
    if fault == "402":
        return Response(402, errors.credit_limit())
    if fault == "403":
        return Response(403, errors.body(errors.CONTEXT_403, "invalid_request_error", param="max_tokens"))
    if fault == "404":
        return Response(404, errors.model_not_found(await _requested_model(request)))
    if fault == "429":
        return _rate_limited("dynamic_request_limited")
    if fault == "429-tokens":
        return _rate_limited("dynamic_token_limited")
    if fault in ("500", "502", "503", "504"):
        return Response(int(fault), errors.server_error(int(fault)))
    if fault == "html":
        return Response(502, errors.HTML_502, b"text/html")
    if fault == "malformed":
        return Response(
            200, b'{"id":"ogzjdpL-6Ng1vN-9f391a08f8af75e1","object":"chat.completion","choices":[{"ind'
        )
    if fault == "timeout":
        await _hang(request, state.scenario.timeout_s)
        return Response(504, errors.server_error(504))
    if fault == "reset":
        raise DropConnection
    return Response(400, errors.invalid_request(f"Unknown X-Simulate value {fault!r}"))
