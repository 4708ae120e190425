"""Free, unbilled account endpoints: the model catalog and whoami."""

from __future__ import annotations

from typing import TYPE_CHECKING

from together_dash.simulator import catalog
from together_dash.simulator.wire import JSON, Request, Response, dumps, json_response

if TYPE_CHECKING:
    from together_dash.simulator.state import SimulatorState


async def list_models(state: SimulatorState, request: Request) -> Response:
    """GET /models: a bare JSON array; `?dedicated=true` lists only the non-serverless models.

    It carries the key's rate-limit headers without spending from the budget, so a poller can read
    its headroom for free (whether real Together sends them here varies, reference §4.1).
    """
    now = state.clock.now()
    headers = state.budget(request.key, now).headers(now)
    if b"dedicated=true" in request.query_string:
        removed = state.removed_models()
        dedicated = [m.to_json() for m in catalog.MODELS if not m.serverless and m.id not in removed]
        return Response(200, dumps(dedicated), JSON, headers)
    return Response(200, state.models_json(), JSON, headers)


async def whoami(state: SimulatorState, request: Request) -> Response:
    return json_response(state.whoami(request.key))
