"""The billed inference endpoints: chat and text completions (JSON and SSE), embeddings, images.

Each request passes, in order: credits (402), the key's request budget (429), validation (404 / 400),
the key's token budget (429); only then is it billed and answered. Rate-limit headers ride on every
response from these endpoints.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from together_dash.simulator import billing, errors, inference, ratelimits, streaming, wire
from together_dash.simulator.catalog import CHAT_TYPES, CatalogModel
from together_dash.simulator.inference import DEFAULT_SHAPE, OutputShape, Reply
from together_dash.simulator.wire import JSON, SSE, Headers, Request, Response

if TYPE_CHECKING:
    from together_dash.simulator.state import SimulatorState

Failure = tuple[int, bytes]


_SHAPE_HEADERS = (
    b"x-simulate-output-tokens",
    b"x-simulate-output-bytes",
    b"x-simulate-chunk-bytes",
    b"x-simulate-chunk-delay-ms",
)


def _shape(request: Request, body: dict[str, Any]) -> OutputShape:
    # Most requests carry no shaping options; skip the parsing for them.
    if "simulate" in body or any(name in request.headers for name in _SHAPE_HEADERS):
        return OutputShape.from_request(request.headers, body)
    return DEFAULT_SHAPE


def resolve_model(
    state: SimulatorState, body: dict[str, Any], types: frozenset[str]
) -> CatalogModel | Failure:
    model_id = body.get("model")
    if not isinstance(model_id, str) or not model_id:
        return 400, errors.invalid_request("model is required", param="model")
    endpoint = state.endpoints.by_name(model_id) if state.endpoints.endpoints else None
    if endpoint is not None:
        return _dedicated_model(state, endpoint)
    model = state.model(model_id)
    if model is None:
        return 404, errors.model_not_found(model_id)
    if not model.serverless:
        return 400, errors.model_not_available(model_id)
    if model.type not in types:
        return 400, errors.invalid_request(
            f"Model {model_id} is a {model.type} model and cannot serve this endpoint.", param="model"
        )
    return model


def _dedicated_model(state: SimulatorState, endpoint: Any) -> CatalogModel | Failure:
    """A request to `<project_slug>/<endpoint>`: served by the endpoint's model while it is STARTED."""
    now = state.clock.now()
    current = endpoint.state_at(now)
    model = state.model(endpoint.model)
    if current != "STARTED" or model is None:
        message = f"Endpoint {endpoint.name} is {current}; start it to send it requests."
        return 400, errors.body(message, "invalid_request_error", code="model_not_available")
    endpoint.last_request = now
    return model


def charges(
    state: SimulatorState, body: dict[str, Any], reply: Reply, *, batch: bool = False
) -> list[billing.Charge]:
    """The tokens a served completion puts on the bill (none on a dedicated endpoint: it bills per minute)."""
    if state.endpoints.endpoints and state.endpoints.by_name(str(body.get("model"))) is not None:
        return []
    model = state.model(reply.model)
    if model is None:
        return []
    return billing.token_charges(
        model, reply.prompt_tokens, reply.completion_tokens, cached_tokens=reply.cached_tokens, batch=batch
    )


def _max_tokens(body: dict[str, Any]) -> int | None | Failure:
    value = body.get("max_tokens")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return 400, errors.invalid_request("max_tokens must be a non-negative integer", param="max_tokens")
    return value


def _check_context(model: CatalogModel, prompt_tokens: int, max_tokens: int | None) -> Failure | None:
    """Together's own rule: inputs + max_new_tokens <= context length (400 with its exact wording)."""
    context = model.context_length or 0
    wanted = max_tokens if max_tokens is not None else 1
    if prompt_tokens + wanted > context:
        return 400, errors.context_overflow(context, prompt_tokens, wanted)
    return None


def plan_chat(
    state: SimulatorState,
    body: dict[str, Any],
    shape: OutputShape = DEFAULT_SHAPE,
    organization_id: str | None = None,
) -> Reply | Failure:
    """Validate a chat request and decide its reply (its organisation's prompt cache); batches use it too."""
    model = resolve_model(state, body, CHAT_TYPES)
    if isinstance(model, tuple):
        return model
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return 400, errors.invalid_request("messages must be a non-empty list", param="messages")
    max_tokens = _max_tokens(body)
    if isinstance(max_tokens, tuple):
        return max_tokens
    prompt_tokens = inference.chat_prompt_tokens(messages, body.get("tools"))
    overflow = _check_context(model, prompt_tokens, max_tokens)
    if overflow is not None:
        return overflow
    tool = inference.chosen_tool(body)
    if tool is not None:
        reply = inference.plan_tool_call(model.id, prompt_tokens, tool, state.clock.now())
    else:
        reply = inference.plan_reply(model.id, prompt_tokens, max_tokens, shape, state.clock.now())
    if model.cached_input_price is not None:
        scope = organization_id or state.organization_id
        reply.cached_tokens = state.prompt_cache.cached_tokens(scope, model.id, messages, state.clock.now())
    return reply


def _plan_text(state: SimulatorState, body: dict[str, Any], shape: OutputShape) -> Reply | Failure:
    model = resolve_model(state, body, CHAT_TYPES)
    if isinstance(model, tuple):
        return model
    if "prompt" not in body:
        return 400, errors.invalid_request("prompt is required", param="prompt")
    max_tokens = _max_tokens(body)
    if isinstance(max_tokens, tuple):
        return max_tokens
    prompt_tokens = inference.text_prompt_tokens(body["prompt"])
    overflow = _check_context(model, prompt_tokens, max_tokens)
    return overflow or inference.plan_reply(model.id, prompt_tokens, max_tokens, shape, state.clock.now())


def _admit(state: SimulatorState, request: Request) -> tuple[ratelimits.KeyBudget, Response | None]:
    """Credits, then the request budget: what every billed call passes before validation."""
    now = state.clock.now()
    budget = state.budget(request.key, now)
    if not state.has_credit():
        return budget, Response(402, errors.credit_limit(), JSON, budget.headers(now))
    kind = budget.admit(now)
    if kind is not None:
        return budget, _limited(budget, kind, now)
    return budget, None


def _limited(budget: ratelimits.KeyBudget, kind: str, now: float) -> Response:
    limit = budget.limit
    amount = limit.requests if kind == ratelimits.REQUEST_LIMITED else limit.tokens
    return Response(429, errors.rate_limited(kind, amount, limit.window_s), JSON, budget.headers(now))


def _charge(
    state: SimulatorState,
    request: Request,
    budget: ratelimits.KeyBudget,
    tokens: int,
    bill: list[billing.Charge],
) -> tuple[Headers, Response | None]:
    now = state.clock.now()
    kind = budget.charge_tokens(tokens, now)
    if kind is not None:
        return [], _limited(budget, kind, now)
    state.bill(bill, state.organization_of(request.key))
    return budget.headers(now), None


def _body(request: Request) -> dict[str, Any]:
    body = request.json()
    if not isinstance(body, dict):
        raise ValueError("the request body must be a JSON object")
    return body


async def chat(state: SimulatorState, request: Request) -> Response:
    body = _body(request)
    budget, refused = _admit(state, request)
    if refused is not None:
        return refused
    shape = _shape(request, body)
    plan = plan_chat(state, body, shape, state.organization_of(request.key))
    if isinstance(plan, tuple):
        return Response(plan[0], plan[1], JSON, budget.headers(state.clock.now()))
    headers, refused = _charge(state, request, budget, plan.total_tokens, charges(state, body, plan))
    if refused is not None:
        return refused
    if body.get("stream"):
        if plan.tool_call is not None:
            return Response(200, content_type=SSE, headers=headers, stream=streaming.tool_call_events(plan))
        events = streaming.completion_events(plan, shape, fault=_stream_fault(request))
        return Response(200, content_type=SSE, headers=headers, stream=events)
    return Response(200, inference.chat_completion(plan), JSON, headers)


async def text(state: SimulatorState, request: Request) -> Response:
    body = _body(request)
    budget, refused = _admit(state, request)
    if refused is not None:
        return refused
    shape = _shape(request, body)
    plan = _plan_text(state, body, shape)
    if isinstance(plan, tuple):
        return Response(plan[0], plan[1], JSON, budget.headers(state.clock.now()))
    headers, refused = _charge(state, request, budget, plan.total_tokens, charges(state, body, plan))
    if refused is not None:
        return refused
    if body.get("stream"):
        events = streaming.completion_events(plan, shape, chat=False, fault=_stream_fault(request))
        return Response(200, content_type=SSE, headers=headers, stream=events)
    return Response(200, inference.text_completion(plan), JSON, headers)


def _stream_fault(request: Request) -> str:
    fault = request.header(b"x-simulate").strip().lower()
    return fault if fault in ("midstream-error", "midstream-reset") else ""


async def embeddings(state: SimulatorState, request: Request) -> Response:
    body = _body(request)
    budget, refused = _admit(state, request)
    if refused is not None:
        return refused
    now = state.clock.now()
    model = resolve_model(state, body, frozenset({"embedding"}))
    if isinstance(model, tuple):
        return Response(model[0], model[1], JSON, budget.headers(now))
    raw = body.get("input")
    inputs = [raw] if isinstance(raw, str) else raw
    if not isinstance(inputs, list) or not inputs or not all(isinstance(x, str) for x in inputs):
        return Response(
            400,
            errors.invalid_request("input must be a string or a list of strings", param="input"),
            JSON,
            budget.headers(now),
        )
    for text_input in inputs:
        overflow = _check_context(model, inference.count_tokens(text_input), 0)
        if overflow is not None:
            return Response(overflow[0], overflow[1], JSON, budget.headers(now))
    payload, tokens = inference.embeddings(model, inputs)
    headers, refused = _charge(state, request, budget, tokens, billing.token_charges(model, tokens, 0))
    return refused or Response(200, payload, JSON, headers)


async def images(state: SimulatorState, request: Request) -> Response:
    body = _body(request)
    budget, refused = _admit(state, request)
    if refused is not None:
        return refused
    model = resolve_model(state, body, frozenset({"image"}))
    if isinstance(model, tuple):
        return Response(model[0], model[1], JSON, budget.headers(state.clock.now()))
    n = body.get("n") or 1
    if not isinstance(n, int) or not 1 <= n <= 4:
        return Response(
            400,
            errors.invalid_request("n must be between 1 and 4", param="n"),
            JSON,
            budget.headers(state.clock.now()),
        )
    headers, refused = _charge(state, request, budget, 0, billing.image_charges(model, n))
    if refused is not None:
        return refused
    payload = inference.image_generation(model.id, n, body.get("response_format") or "url", request.host)
    return Response(200, payload, JSON, headers)


def _rerank_texts(documents: Any, rank_fields: Any) -> list[str] | None:
    """Each document's text to rank: a string as is, an object's `rank_fields` (all fields by default)."""
    if not isinstance(documents, list) or not documents:
        return None
    texts = []
    for document in documents:
        if isinstance(document, str):
            texts.append(document)
        elif isinstance(document, dict):
            fields = rank_fields if isinstance(rank_fields, list) and rank_fields else list(document)
            texts.append(" ".join(str(document.get(name, "")) for name in fields))
        else:
            return None
    return texts


async def rerank(state: SimulatorState, request: Request) -> Response:
    """POST /v1/rerank: documents scored by word overlap with the query, best first, billed as input."""
    body = _body(request)
    budget, refused = _admit(state, request)
    if refused is not None:
        return refused
    now = state.clock.now()
    model = resolve_model(state, body, frozenset({"rerank"}))
    if isinstance(model, tuple):
        return Response(model[0], model[1], JSON, budget.headers(now))
    query = body.get("query")
    texts = _rerank_texts(body.get("documents"), body.get("rank_fields"))
    if not isinstance(query, str) or not query or texts is None:
        message = "query must be a string and documents a non-empty list of strings or objects"
        return Response(400, errors.invalid_request(message, param="documents"), JSON, budget.headers(now))
    top_n = body.get("top_n") or len(texts)
    if isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1:
        return Response(
            400,
            errors.invalid_request("top_n must be a positive integer", param="top_n"),
            JSON,
            budget.headers(now),
        )
    prompt_tokens = sum(inference.count_tokens(query) + inference.count_tokens(text) for text in texts)
    bill = billing.token_charges(model, prompt_tokens, 0)
    headers, refused = _charge(state, request, budget, prompt_tokens, bill)
    if refused is not None:
        return refused
    scores = [inference.relevance(query, text) for text in texts]
    order = sorted(range(len(texts)), key=lambda i: (-scores[i], i))[:top_n]
    keep = bool(body.get("return_documents"))
    results = [
        {"index": i, "relevance_score": scores[i], "document": {"text": texts[i]} if keep else {}}
        for i in order
    ]
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": 0, "total_tokens": prompt_tokens}
    payload = {
        "id": wire.completion_id(),
        "object": "rerank",
        "model": model.id,
        "results": results,
        "usage": usage,
    }
    return Response(200, wire.dumps(payload), JSON, headers)
