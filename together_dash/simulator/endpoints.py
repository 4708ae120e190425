"""Dedicated endpoints and the hardware they run on, moving through their states with the clock.

`/v1/endpoints` and `/v1/hardware` answer in the shapes Together's document gives; together 3.x
reads the same endpoints through `/v2/projects/{id}/endpoints` (camelCase, with one deployment per
endpoint) and the hardware through `/v2/public/inference-instance-types`, so both views are served
from one store.

A new endpoint is PENDING, then STARTING, then STARTED (ERROR instead, on hardware that is not
available); stopping passes through STOPPING. With `inactive_timeout` (minutes; null or 0: never)
a STARTED endpoint stops itself after that long without a request addressed to it. The timeline is
kept as (time, state) pairs, so any past state, and the minutes billed, can be read back.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from together_dash.simulator import catalog, errors, pages
from together_dash.simulator.account import refuse_project
from together_dash.simulator.clock import iso
from together_dash.simulator.wire import Request, Response, json_response

if TYPE_CHECKING:
    from together_dash.simulator.state import SimulatorState

PENDING_S = 10.0
STARTING_S = 50.0
STOPPING_S = 20.0
STATES = ("PENDING", "STARTING", "STARTED", "STOPPING", "STOPPED", "ERROR")
_V2_STATE = {
    "PENDING": "DEPLOYMENT_STATE_PROVISIONING",
    "STARTING": "DEPLOYMENT_STATE_PROVISIONING",
    "STARTED": "DEPLOYMENT_STATE_READY",
    "STOPPING": "DEPLOYMENT_STATE_STOPPING",
    "STOPPED": "DEPLOYMENT_STATE_STOPPED",
    "ERROR": "DEPLOYMENT_STATE_FAILED",
}
_HARDWARE_UPDATED = 1767225600  # 2026-01-01: fixed, so output is reproducible


@dataclass(frozen=True, slots=True)
class Hardware:
    id: str
    gpu_type: str
    gpu_link: str
    gpu_memory: int  # GB per GPU
    gpu_count: int
    cents_per_minute: float
    availability: str  # available | unavailable | insufficient

    def fits(self, model: catalog.CatalogModel) -> bool:
        """Room for the weights in 16-bit plus a fifth for the KV cache."""
        return self.gpu_memory * self.gpu_count * 1e9 >= model.param_count * 2 * 1.2

    def to_json(self, model: catalog.CatalogModel | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {
            "object": "hardware",
            "id": self.id,
            "pricing": {"cents_per_minute": self.cents_per_minute},
            "specs": {
                "gpu_type": self.gpu_type,
                "gpu_link": self.gpu_link,
                "gpu_memory": self.gpu_memory,
                "gpu_count": self.gpu_count,
            },
            "updated_at": iso(_HARDWARE_UPDATED),
        }
        if model is not None:  # the document: availability comes with a model filter
            data["availability"] = {"status": self.availability}
        return data

    def to_instance_type(self) -> dict[str, Any]:
        """The 3.x view (`InferenceInstanceType`): hourly cents, camelCase, regions with headroom."""
        headroom = {"available": 8, "insufficient": 1, "unavailable": 0}[self.availability]
        return {
            "id": self.id,
            "name": self.id,
            "description": f"{self.gpu_count}x {self.gpu_type} ({self.gpu_memory} GB, {self.gpu_link})",
            "gpuCount": self.gpu_count,
            "gpuMemoryGib": self.gpu_memory,
            "gpuType": self.gpu_type,
            "priceCentsPerHour": round(self.cents_per_minute * 60),
            "regions": [
                {"name": "us-central-1", "headroom": {"relation": "RELATION_GTE", "value": headroom}}
            ],
        }


HARDWARE: tuple[Hardware, ...] = (
    Hardware("1x_nvidia_a100_80gb_sxm", "a100-80gb", "sxm", 80, 1, 4.27, "available"),
    Hardware("2x_nvidia_a100_80gb_sxm", "a100-80gb", "sxm", 80, 2, 8.53, "available"),
    Hardware("1x_nvidia_h100_80gb_sxm", "h100-80gb", "sxm", 80, 1, 5.6, "available"),
    Hardware("2x_nvidia_h100_80gb_sxm", "h100-80gb", "sxm", 80, 2, 11.2, "insufficient"),
    Hardware("8x_nvidia_h100_80gb_sxm", "h100-80gb", "sxm", 80, 8, 44.8, "available"),
    # Listed but never schedulable: an endpoint created on it ends in ERROR.
    Hardware("8x_nvidia_h200_141gb_sxm", "h200-141gb", "sxm", 141, 8, 66.4, "unavailable"),
)
HARDWARE_BY_ID = {hw.id: hw for hw in HARDWARE}


@dataclass(slots=True)
class Endpoint:
    id: str
    name: str  # `<project_slug>/<endpoint name>`: what inference requests send as `model`
    display_name: str
    model: str
    hardware: str
    owner: str
    created: float
    min_replicas: int
    max_replicas: int
    inactive_timeout: int | None  # minutes
    cents_per_minute: float
    history: list[tuple[float, str]] = field(default_factory=list)
    last_request: float = 0.0
    deleted_at: float | None = None
    visibility: str = "VISIBILITY_PRIVATE"
    version: int = 1
    organization_id: str = ""  # whose bill its running minutes go on

    def settle(self, now: float) -> None:
        """Write in the self-stop an inactive timeout caused, if it fell before `now`."""
        if not self.inactive_timeout:
            return
        at, state = self._state_entry(now)
        if state != "STARTED":
            return
        idle_from = max(at, self.last_request)
        stop_at = idle_from + self.inactive_timeout * 60
        if stop_at <= now:
            self._schedule(stop_at, [("STOPPING", 0.0), ("STOPPED", STOPPING_S)])

    def _state_entry(self, now: float) -> tuple[float, str]:
        current = self.history[0]
        for entry in self.history:
            if entry[0] > now:
                break
            current = entry
        return current

    def state_at(self, now: float) -> str:
        self.settle(now)
        return self._state_entry(now)[1]

    def _schedule(self, at: float, steps: list[tuple[str, float]]) -> None:
        """Drop transitions after `at` and append `steps` (state, delay after the previous one)."""
        self.history = [entry for entry in self.history if entry[0] <= at]
        for state, delay in steps:
            at += delay
            self.history.append((at, state))

    def start(self, now: float, hardware: Hardware) -> None:
        if hardware.availability == "unavailable":
            self._schedule(now, [("PENDING", 0.0), ("ERROR", PENDING_S)])
        else:
            self._schedule(now, [("PENDING", 0.0), ("STARTING", PENDING_S), ("STARTED", STARTING_S)])

    def stop(self, now: float) -> None:
        if self.state_at(now) not in ("STOPPING", "STOPPED", "ERROR"):
            self._schedule(now, [("STOPPING", 0.0), ("STOPPED", STOPPING_S)])

    def running_intervals(self, until: float) -> list[tuple[float, float]]:
        """The spans spent STARTED up to `until` (or the deletion): what per-minute billing charges."""
        self.settle(until)
        end_of_life = min(until, self.deleted_at) if self.deleted_at is not None else until
        spans = []
        for i, (at, state) in enumerate(self.history):
            if state != "STARTED" or at >= end_of_life:
                continue
            end = self.history[i + 1][0] if i + 1 < len(self.history) else end_of_life
            spans.append((at, min(end, end_of_life)))
        return spans

    def to_json(self, now: float) -> dict[str, Any]:
        """The document's `DedicatedEndpoint` (list entries are the same, a superset of `ListEndpoint`)."""
        return {
            "object": "endpoint",
            "id": self.id,
            "name": self.name,
            "display_name": self.display_name,
            "model": self.model,
            "hardware": self.hardware,
            "type": "dedicated",
            "owner": self.owner,
            "state": self.state_at(now),
            "autoscaling": {"min_replicas": self.min_replicas, "max_replicas": self.max_replicas},
            "inactive_timeout": self.inactive_timeout,
            "created_at": iso(self.created),
        }

    def to_v2(self, state: SimulatorState, now: float) -> dict[str, Any]:
        """together 3.x's `Endpoint`: one live deployment carrying the state and the hardware."""
        current = self.state_at(now)
        ready = self.min_replicas if current == "STARTED" else 0
        deployment_id = "deployment-" + self.id.removeprefix("endpoint-")
        return {
            "id": self.id,
            "name": self.name,
            "projectId": state.project_id,
            "endpointType": "ENDPOINT_TYPE_DEDICATED",
            "visibility": self.visibility,
            "etag": str(self.version),
            "createdAt": iso(self.created),
            "updatedAt": iso(max(entry[0] for entry in self.history if entry[0] <= now)),
            "trafficSplit": [{"deploymentId": deployment_id, "weight": 1}],
            "deployments": [
                {
                    "id": deployment_id,
                    "name": f"{self.name}/primary",
                    "model": f"projects/{state.project_id}/models/{self.model}/revisions/1",
                    "modelId": self.model,
                    "hardware": self.hardware,
                    "state": _V2_STATE[current],
                    "trafficMode": "TRAFFIC_MODE_LIVE",
                    "autoscaling": {"minReplicas": self.min_replicas, "maxReplicas": self.max_replicas},
                    "desiredReplicas": self.min_replicas
                    if current in ("PENDING", "STARTING", "STARTED")
                    else 0,
                    "readyReplicas": ready,
                    "estimatedEffectiveTrafficShare": 1.0 if ready else 0.0,
                    "createdAt": iso(self.created),
                }
            ],
        }


class EndpointStore:
    def __init__(self) -> None:
        self.endpoints: dict[str, Endpoint] = {}
        self.deleted: list[Endpoint] = []

    def all_ever(self) -> list[Endpoint]:
        return [*self.endpoints.values(), *self.deleted]

    def by_name(self, name: str) -> Endpoint | None:
        return next((e for e in self.endpoints.values() if e.name == name), None)


def _not_found(endpoint_id: str) -> Response:
    return Response(404, errors.not_found(f"Endpoint {endpoint_id} not found"))


def _bad(message: str, param: str | None = None) -> Response:
    return Response(400, errors.invalid_request(message, param=param))


def _body(request: Request) -> dict[str, Any]:
    body = request.json()
    if not isinstance(body, dict):
        raise ValueError("the request body must be a JSON object")
    return body


def _replicas(body: dict[str, Any]) -> tuple[int, int] | Response:
    scaling = body.get("autoscaling")
    if not isinstance(scaling, dict):
        return _bad("autoscaling with min_replicas and max_replicas is required", "autoscaling")
    low, high = scaling.get("min_replicas"), scaling.get("max_replicas")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (low, high)) or not 0 < low <= high:
        return _bad("autoscaling needs 0 < min_replicas <= max_replicas", "autoscaling")
    return low, high


def _timeout(body: dict[str, Any]) -> int | None | Response:
    value = body.get("inactive_timeout")
    if value is None or value == 0:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return _bad("inactive_timeout must be a whole number of minutes, or null", "inactive_timeout")
    return value


async def create(state: SimulatorState, request: Request) -> Response:
    """POST /v1/endpoints: a dedicated endpoint that starts by itself (unless `state` is STOPPED)."""
    body = _body(request)
    model = state.model(str(body.get("model") or ""))
    if model is None:
        return Response(404, errors.model_not_found(str(body.get("model"))))
    if model.type not in catalog.CHAT_TYPES:
        return _bad(f"Model {model.id} cannot be deployed on a dedicated endpoint", "model")
    hardware = HARDWARE_BY_ID.get(str(body.get("hardware") or ""))
    if hardware is None:
        return _bad(f"Unknown hardware {body.get('hardware')!r}", "hardware")
    if not hardware.fits(model):
        return _bad(f"Hardware {hardware.id} is too small for {model.id}", "hardware")
    replicas = _replicas(body)
    timeout = _timeout(body)
    for checked in (replicas, timeout):
        if isinstance(checked, Response):
            return checked
    now = state.clock.now()
    suffix = uuid.uuid4()
    endpoint = Endpoint(
        id=f"endpoint-{suffix}",
        name=f"{state.project_slug}/{model.id.rsplit('/', 1)[-1]}-{suffix.hex[:8]}",
        display_name=str(body.get("display_name") or model.display_name),
        model=model.id,
        hardware=hardware.id,
        owner=state.user_slug(request.key),
        created=now,
        min_replicas=replicas[0],  # type: ignore[index]
        max_replicas=replicas[1],  # type: ignore[index]
        inactive_timeout=timeout,  # type: ignore[arg-type]
        cents_per_minute=hardware.cents_per_minute * replicas[0],  # type: ignore[index]
        organization_id=state.organization_of(request.key),
    )
    if body.get("state", "STARTED") == "STOPPED":
        endpoint.history = [(now, "STOPPED")]
    else:
        endpoint.start(now, hardware)
    state.endpoints.endpoints[endpoint.id] = endpoint
    return json_response(endpoint.to_json(now))


def _serverless_entry(model: catalog.CatalogModel) -> dict[str, Any]:
    return {
        "object": "endpoint",
        "id": f"endpoint-{uuid.uuid5(uuid.NAMESPACE_URL, model.id)}",
        "name": model.id,
        "model": model.id,
        "type": "serverless",
        "owner": "together",
        "state": "STARTED",
        "created_at": iso(model.created),
    }


async def list_endpoints(state: SimulatorState, request: Request) -> Response:
    """GET /v1/endpoints: the caller's dedicated endpoints, then Together's serverless ones."""
    query = request.query()
    kind = query.get("type")
    if kind not in (None, "dedicated", "serverless"):
        return _bad("type must be dedicated or serverless", "type")
    now = state.clock.now()
    data: list[dict[str, Any]] = []
    if kind in (None, "dedicated"):
        data += [e.to_json(now) for e in sorted(state.endpoints.endpoints.values(), key=lambda e: e.created)]
    if kind in (None, "serverless") and query.get("mine") != "true":
        removed = state.removed_models()
        data += [_serverless_entry(m) for m in catalog.MODELS if m.serverless and m.id not in removed]
    return json_response({"object": "list", "data": data})


def _endpoint(state: SimulatorState, endpoint_id: str) -> Endpoint | None:
    return state.endpoints.endpoints.get(endpoint_id)


async def retrieve(state: SimulatorState, request: Request) -> Response:
    endpoint = _endpoint(state, request.params[0])
    if endpoint is None:
        return _not_found(request.params[0])
    return json_response(endpoint.to_json(state.clock.now()))


async def update(state: SimulatorState, request: Request) -> Response:
    """PATCH /v1/endpoints/{id}: display name, replicas, inactive timeout, or start/stop via `state`."""
    endpoint = _endpoint(state, request.params[0])
    if endpoint is None:
        return _not_found(request.params[0])
    body = _body(request)
    now = state.clock.now()
    if "state" in body and body["state"] not in ("STARTED", "STOPPED"):
        return _bad("state must be STARTED or STOPPED", "state")
    if "autoscaling" in body:
        replicas = _replicas(body)
        if isinstance(replicas, Response):
            return replicas
        endpoint.min_replicas, endpoint.max_replicas = replicas
    if "inactive_timeout" in body:
        timeout = _timeout(body)
        if isinstance(timeout, Response):
            return timeout
        endpoint.inactive_timeout = timeout
    if "display_name" in body:
        endpoint.display_name = str(body["display_name"])
    if body.get("state") == "STOPPED":
        endpoint.stop(now)
    elif body.get("state") == "STARTED" and endpoint.state_at(now) in ("STOPPED", "STOPPING", "ERROR"):
        endpoint.start(now, HARDWARE_BY_ID[endpoint.hardware])
    endpoint.version += 1
    return json_response(endpoint.to_json(now))


def _remove(state: SimulatorState, endpoint: Endpoint) -> None:
    endpoint.deleted_at = state.clock.now()
    del state.endpoints.endpoints[endpoint.id]
    state.endpoints.deleted.append(endpoint)


async def delete(state: SimulatorState, request: Request) -> Response:
    """DELETE /v1/endpoints/{id}: 204 with no body, as the document says."""
    endpoint = _endpoint(state, request.params[0])
    if endpoint is None:
        return _not_found(request.params[0])
    _remove(state, endpoint)
    return Response(204, b"")


async def list_hardware(state: SimulatorState, request: Request) -> Response:
    """GET /v1/hardware; `?model=` keeps the configurations that fit it and adds their availability."""
    model_id = request.query().get("model")
    if not model_id:
        return json_response({"object": "list", "data": [hw.to_json() for hw in HARDWARE]})
    model = state.model(model_id)
    if model is None:
        return Response(404, errors.model_not_found(model_id))
    return json_response({"object": "list", "data": [hw.to_json(model) for hw in HARDWARE if hw.fits(model)]})


async def list_instance_types(state: SimulatorState, request: Request) -> Response:
    """GET /v2/public/inference-instance-types (3.x `endpoints.hardware.list`): the whole catalog."""
    return json_response(
        {"object": "list", "data": [hw.to_instance_type() for hw in HARDWARE], "next_cursor": None}
    )


# --- together 3.x's project-scoped view ------------------------------------------------------------
def _v2_target(state: SimulatorState, request: Request) -> Endpoint | Response:
    refused = refuse_project(state, request, request.params[0])
    if refused is not None:
        return refused
    endpoint = _endpoint(state, request.params[1])
    return endpoint if endpoint is not None else _not_found(request.params[1])


def _etag_conflict(endpoint: Endpoint, etag: Any) -> Response | None:
    if etag and str(etag) != str(endpoint.version):
        return Response(
            409, errors.body(f"etag {etag} is stale; the endpoint is at {endpoint.version}", "conflict")
        )
    return None


async def v2_list(state: SimulatorState, request: Request) -> Response:
    refused = refuse_project(state, request, request.params[0])
    if refused is not None:
        return refused
    now = state.clock.now()
    entries = [
        e.to_v2(state, now) for e in sorted(state.endpoints.endpoints.values(), key=lambda e: e.created)
    ]
    return pages.cursor_page(entries, request.query())


async def v2_retrieve(state: SimulatorState, request: Request) -> Response:
    endpoint = _v2_target(state, request)
    if isinstance(endpoint, Response):
        return endpoint
    return json_response(endpoint.to_v2(state, state.clock.now()))


_V2_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


async def v2_update(state: SimulatorState, request: Request) -> Response:
    """PATCH /v2/projects/{p}/endpoints/{id}: rename (the inference name) or change visibility."""
    endpoint = _v2_target(state, request)
    if isinstance(endpoint, Response):
        return endpoint
    body = _body(request) if request.body else {}
    conflict = _etag_conflict(endpoint, body.get("etag"))
    if conflict is not None:
        return conflict
    if "name" in body:
        bare = str(body["name"]).removeprefix(f"{state.project_slug}/")
        if not _V2_NAME.match(bare):
            return _bad("name must be lower-case letters, digits and dashes", "name")
        endpoint.name = f"{state.project_slug}/{bare}"
    if "visibility" in body:
        if body["visibility"] not in ("VISIBILITY_PRIVATE", "VISIBILITY_INTERNAL"):
            return _bad("visibility must be VISIBILITY_PRIVATE or VISIBILITY_INTERNAL", "visibility")
        endpoint.visibility = body["visibility"]
    endpoint.version += 1
    return json_response(endpoint.to_v2(state, state.clock.now()))


async def v2_delete(state: SimulatorState, request: Request) -> Response:
    endpoint = _v2_target(state, request)
    if isinstance(endpoint, Response):
        return endpoint
    conflict = _etag_conflict(endpoint, request.query().get("etag"))
    if conflict is not None:
        return conflict
    _remove(state, endpoint)
    return json_response({})
