"""JSON API of the diagnostics app: POST /api/preflight (session or ops token, like the read API)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Field, Router, Schema, Status

from together_dash.diagnostics.preflight import PreflightInputError, check
from together_dash.traffic.api import READ_AUTH, Problem, ValidationProblem, read_responses

router = Router(tags=["diagnostics"])


class PreflightIn(Schema):
    # No NUL: PostgreSQL refuses it in the catalog lookup (a 500 otherwise); no model id has one.
    model: str = Field(pattern=r"^[^\x00]*$", description="Exact Together model id.")
    max_tokens: int = Field(ge=1, description="max_tokens of the request to check.")
    messages: list[dict[str, Any]] | None = Field(None, description="Chat messages; or give prompt.")
    prompt: str | None = Field(None, description="A text prompt; or give messages.")


class PreflightOut(Schema):
    ok: bool
    model: str
    model_found: bool
    model_id: str | None
    model_state: str | None
    context_length: int | None
    prompt_tokens: int
    max_tokens: int
    total_tokens: int
    fits: bool | None
    tokenizer: str = Field(description="Which tokenizer counted prompt_tokens (a real one or the estimate).")
    close_matches: list[str]
    successor: str | None
    problems: list[str]


@router.post(
    "/preflight",
    auth=READ_AUTH,
    # 403: a session (not an ops token) posting without its CSRF token.
    response=read_responses(s200=PreflightOut, s403=Problem, s422=Problem | ValidationProblem),
    summary="Preflight",
)
def preflight(request: HttpRequest, body: PreflightIn) -> Status[dict[str, Any]]:
    """Does the model exist exactly in the catalog, and do prompt tokens + max_tokens fit its context?"""
    try:
        result = check(body.model, body.max_tokens, messages=body.messages, prompt=body.prompt)
    except PreflightInputError as exc:
        return Status(422, {"detail": str(exc)})
    return Status(200, result.to_dict())
