"""Free, unbilled account endpoints: the model catalogs, the project's own models and whoami.

Three catalogs answer today: `GET /v1/models` (the flat list older SDKs and the pollers read),
`GET /v2/supported-models` (together 3.x's `models.list_supported`, cursor-paginated, camelCase) and
`GET /v2/projects/{id}/models` (3.x's `models.list`: the project's own models, here the outputs of
its finished fine-tunes).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from together_dash.simulator import catalog, errors, pages
from together_dash.simulator.clock import iso
from together_dash.simulator.wire import JSON, Request, Response, dumps, json_response

if TYPE_CHECKING:
    from together_dash.simulator.state import SimulatorState

# Which products and modalities each catalog type belongs to (the SDK's enum values).
_CAPABILITY = {
    "chat": "CAPABILITY_CHAT",
    "language": "CAPABILITY_CHAT",
    "code": "CAPABILITY_CHAT",
    "moderation": "CAPABILITY_CHAT",
    "embedding": "CAPABILITY_EMBEDDING",
    "rerank": "CAPABILITY_RERANKING",
    "image": "CAPABILITY_IMAGE_GENERATION",
}


async def list_models(state: SimulatorState, request: Request) -> Response:
    """GET /v1/models: a bare JSON array; `?dedicated=true` lists only the non-serverless models.

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
    """GET /v1/whoami: the flat shape together 1.x and 2.x read."""
    return json_response(state.whoami(request.key))


async def whoami_v3(state: SimulatorState, request: Request) -> Response:
    """GET /v3/whoami: a union tagged by `type`; org keys (scenario `org_keys`) carry no project."""
    return json_response(state.whoami_v3(request.key))


def products(model: catalog.CatalogModel) -> list[str]:
    found = ["PRODUCT_SERVERLESS"] if model.serverless else []
    if model.type in catalog.CHAT_TYPES:
        found.append("PRODUCT_DEDICATED")
    if model.finetunable:
        found.append("PRODUCT_FINE_TUNING")
    return found


def modalities(model: catalog.CatalogModel) -> tuple[list[str], list[str]]:
    """Input and output modalities; images go in as text and come out as images."""
    if model.type == "image":
        return ["MODALITY_TEXT"], ["MODALITY_IMAGE"]
    return ["MODALITY_TEXT"], ["MODALITY_TEXT"]


def supported_model(model: catalog.CatalogModel) -> dict[str, Any]:
    """One `/v2/supported-models` entry (the SDK's `SupportedModel`, camelCase on the wire)."""
    inputs, outputs = modalities(model)
    created = iso(model.created)
    entry: dict[str, Any] = {
        "id": model.id,
        "name": model.id,
        "baseModel": "",
        "baseModelId": "",
        "capabilities": [_CAPABILITY.get(model.type, "CAPABILITY_CHAT")],
        "createdAt": created,
        "updatedAt": created,
        "deploymentProfiles": [],
        "displayName": model.display_name,
        "displayType": model.type,
        "inputModalities": inputs,
        "outputModalities": outputs,
        "products": products(model),
        "publisher": model.organization,
        "status": "SUPPORTED_MODEL_STATUS_SUPPORTED",
        "serverlessEndpoint": model.id if model.serverless else None,
        "tags": [model.type],
    }
    if model.context_length is not None:
        entry["contextLength"] = str(model.context_length)  # the SDK types it as a string
    if model.serverless and model.type != "image":
        entry["pricing"] = {"input": model.input_price, "output": model.output_price}
        if model.cached_input_price is not None:
            entry["pricing"]["cachedInput"] = model.cached_input_price
    return entry


def _matches(model: catalog.CatalogModel, query: dict[str, str]) -> bool:
    product = query.get("product")
    if product and product not in products(model):
        return False
    modality = query.get("modality")
    if modality and modality not in modalities(model)[0]:
        return False
    search = query.get("search", "").lower()
    return not search or search in model.id.lower() or search in model.display_name.lower()


async def list_supported(state: SimulatorState, request: Request) -> Response:
    """GET /v2/supported-models, filtered by `product`, `modality` and `search`."""
    query = request.query()
    removed = state.removed_models()
    entries = [supported_model(m) for m in catalog.MODELS if m.id not in removed and _matches(m, query)]
    return pages.cursor_page(entries, query)


async def retrieve_supported(state: SimulatorState, request: Request) -> Response:
    model = state.model(request.params[0])
    if model is None:
        return Response(404, errors.not_found(f"Supported model {request.params[0]} not found"))
    return json_response(supported_model(model))


def refuse_project(state: SimulatorState, request: Request, project_id: str) -> Response | None:
    """403 unless `project_id` is the caller's project (an org key may name its org's project)."""
    if project_id == state.project_id:
        return None
    return Response(403, errors.permission_denied(f"The API key has no access to project {project_id}"))


def project_model(state: SimulatorState, name: str, created: float) -> dict[str, Any]:
    """One of the project's own models (the SDK's `Model`): here a fine-tune's output."""
    return {
        "id": f"model-{name.rsplit('/', 1)[-1]}",
        "name": f"{state.project_slug}/{name.rsplit('/', 1)[-1]}",
        "organizationId": state.organization_id,
        "projectId": state.project_id,
        "visibility": "VISIBILITY_PRIVATE",
        "weights": {"type": "WEIGHTS_TYPE_ADAPTER"},
        "description": f"Fine-tuned on the simulator at {iso(created)}",
    }


async def list_project_models(state: SimulatorState, request: Request) -> Response:
    """GET /v2/projects/{id}/models: the models the project's completed fine-tunes produced."""
    refused = refuse_project(state, request, request.params[0])
    if refused is not None:
        return refused
    now = state.clock.now()
    jobs = sorted(state.finetunes.jobs.values(), key=lambda job: job.created)
    entries = [
        project_model(state, job.output_name, job.created)
        for job in jobs
        if job.status_at(now) == "completed"
    ]
    return pages.cursor_page(entries, request.query())
