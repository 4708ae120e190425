"""Runtime control under /_sim (outside /v1, no auth: the simulator only listens where tests run it).

GET  /_sim/health                      {"ok": true}
GET  /_sim/state                       credits, billed calls, revoked keys, removed models, scenario
POST /_sim/reset      [scenario]       forget everything; the body (optional) is a whole new scenario
POST /_sim/scenario   {fields...}      change some scenario fields, keep the rest
POST /_sim/credits    {"calls": N}     billed calls left before 402s (null: unlimited); or {"add": N}
POST /_sim/revoke     {"key": K}       401 for that key from now on; {"key": K, "revoked": false} undoes
POST /_sim/clock      {"freeze": bool, "at": unix_s, "advance_s": N}   (at: freeze at that instant)
PUT  /_sim/uploads/{file_id}?token=T   the upload target of the SDK's redirect flow
GET  /_sim/images/{name}.png           the images that generations point at
"""

from __future__ import annotations

import base64
import json
import re
from typing import TYPE_CHECKING, Any

from together_dash.simulator import errors, files
from together_dash.simulator.inference import PNG_BYTES_B64
from together_dash.simulator.scenario import Scenario
from together_dash.simulator.wire import Request, Response, json_response

if TYPE_CHECKING:
    from together_dash.simulator.state import SimulatorState

_UPLOAD = re.compile(r"^/_sim/uploads/([A-Za-z0-9._-]+)$")
_PNG = base64.b64decode(PNG_BYTES_B64)


def _payload(request: Request) -> dict[str, Any]:
    if not request.body.strip():
        return {}
    data = json.loads(request.body)
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    return data


async def handle(state: SimulatorState, request: Request) -> Response:
    try:
        return await _dispatch(state, request)
    except ValueError as exc:
        return Response(400, errors.invalid_request(str(exc)))


async def _dispatch(state: SimulatorState, request: Request) -> Response:
    method, path = request.method, request.path
    upload = _UPLOAD.match(path)
    if upload and method == "PUT":
        request.params = (upload.group(1),)
        return await files.put_upload(state, request)
    if method == "GET" and path.startswith("/_sim/images/"):
        return Response(200, _PNG, b"image/png")
    if method == "GET" and path == "/_sim/health":
        return json_response({"ok": True})
    if method == "GET" and path == "/_sim/state":
        return json_response(state.summary())
    if method != "POST":
        return Response(404, errors.not_found(f"No simulator control at {method} {path}"))
    data = _payload(request)
    if path == "/_sim/reset":
        state.reset(Scenario.from_dict(data, base=state.base_scenario) if data else None)
    elif path == "/_sim/scenario":
        state.apply_scenario(Scenario.from_dict(data, base=state.scenario), changed=set(data))
    elif path == "/_sim/credits":
        _set_credits(state, data)
    elif path == "/_sim/revoke":
        _revoke(state, data)
    elif path == "/_sim/clock":
        _clock(state, data)
    else:
        return Response(404, errors.not_found(f"No simulator control at {method} {path}"))
    return json_response(state.summary())


def _set_credits(state: SimulatorState, data: dict[str, Any]) -> None:
    if "add" in data:
        state.credits_remaining = (state.credits_remaining or 0) + int(data["add"])
    elif "calls" in data:
        calls = data["calls"]
        state.credits_remaining = None if calls is None else int(calls)
    else:
        raise ValueError('expected {"calls": N or null} or {"add": N}')


def _revoke(state: SimulatorState, data: dict[str, Any]) -> None:
    key = data.get("key")
    if not isinstance(key, str) or not key:
        raise ValueError('expected {"key": "..."}')
    if data.get("revoked", True):
        state.revoked.add(key)
    else:
        state.revoked.discard(key)
        state.revoke_at.pop(key, None)


def _clock(state: SimulatorState, data: dict[str, Any]) -> None:
    if data.get("freeze") is True:
        state.clock.freeze(float(data["at"]) if data.get("at") is not None else None)
    elif data.get("freeze") is False:
        state.clock.unfreeze()
    if "advance_s" in data:
        state.clock.advance(float(data["advance_s"]))
