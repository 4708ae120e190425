"""Catalog look-ups shared by the pollers, the dashboard and the preflight tools: successors and near misses.

Model ids always match exactly. Everything here is a suggestion to show a person; nothing rewrites a
model id in a request.
"""
from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

from django.db import DatabaseError, transaction

from together_dash.catalog.models import ModelInfo

_LEADING_LETTERS = re.compile(r"[a-z]+")


def family_of(model_id: str, organization: str = "") -> str:
    """The model family from its id: "meta-llama/Meta-Llama-3.1-8B" -> "llama", "Qwen/Qwen2.5-7B" -> "qwen".

    A heuristic over Together's naming: the leading letters of the name's first dash-separated part,
    skipping a first part that only repeats the organization ("Meta-Llama"), unless what follows is
    too short to be a family name ("DeepSeek-V3" stays "deepseek").
    """
    parts = model_id.rsplit("/", 1)[-1].lower().split("-")
    first = _letters(parts[0])
    if len(parts) > 1 and first and first == organization.lower().replace(" ", ""):
        second = _letters(parts[1])
        if len(second) >= 3:
            return second
    return first


def _letters(part: str) -> str:
    match = _LEADING_LETTERS.match(part)
    return match.group(0) if match else ""


def successor_for(model: ModelInfo, candidates: Iterable[ModelInfo]) -> ModelInfo | None:
    """The newest available model of the same organization, family and type with at least its context."""
    family = family_of(model.model_id, model.organization)
    fitting = [
        other
        for other in candidates
        if other.model_id != model.model_id
        and not other.is_removed
        and other.organization == model.organization
        and other.type == model.type
        and family_of(other.model_id, other.organization) == family
        and _context_fits(other.context_length, model.context_length)
    ]
    return max(fitting, key=_newest_first, default=None)


def _context_fits(candidate: int | None, needed: int | None) -> bool:
    if needed is None:
        return True
    return candidate is not None and candidate >= needed


def _newest_first(model: ModelInfo) -> tuple[float, float, str]:
    created = model.upstream_created.timestamp() if model.upstream_created else 0.0
    return (created, model.first_seen.timestamp(), model.model_id)


def suggest_successor(model_id: str) -> str | None:
    """A successor for a (removed) model id, or None when the catalog has nothing that fits."""
    model = ModelInfo.objects.filter(model_id=model_id).first()
    if model is None:
        return None
    same_org = ModelInfo.objects.filter(organization=model.organization)
    candidates = same_org.exclude(state=ModelInfo.State.REMOVED)
    successor = successor_for(model, candidates)
    return successor.model_id if successor else None


def close_matches(model_id: str, n: int = 5, cutoff: float = 0.6) -> list[str]:
    """Available model ids that look like model_id, best first; never model_id itself.

    Compared case-insensitively, on the whole id and on the part after the organization, so that
    "llama-3.3-70b-instruct-turbo" still finds "meta-llama/Llama-3.3-70B-Instruct-Turbo".
    """
    ids = ModelInfo.objects.exclude(state=ModelInfo.State.REMOVED).values_list("model_id", flat=True)
    scored = [(_similarity(model_id, known), known) for known in ids if known != model_id]
    scored = [(score, known) for score, known in scored if score >= cutoff]
    scored.sort(key=lambda pair: (-pair[0], pair[1]))
    return [known for _, known in scored[:n]]


def _similarity(query: str, candidate: str) -> float:
    query, candidate = query.lower(), candidate.lower()
    whole = difflib.SequenceMatcher(None, query, candidate).ratio()
    name = difflib.SequenceMatcher(None, query.rsplit("/", 1)[-1], candidate.rsplit("/", 1)[-1]).ratio()
    return max(whole, name)


def context_length_for(model_id: str) -> int | None:
    """The model's context length from the catalog; None when the catalog does not know it."""
    if not model_id:
        return None
    try:
        with transaction.atomic():  # a savepoint, so a missing table does not break the caller's transaction
            rows = ModelInfo.objects.filter(model_id=model_id).values_list("context_length", flat=True)
            return rows.first()
    except DatabaseError:  # the catalog's table is not migrated yet
        return None


def known_model_ids() -> list[str]:
    """Model ids the catalog knows a context length for, for the upload form's suggestions."""
    try:
        with transaction.atomic():
            return list(
                ModelInfo.objects.exclude(context_length=None).values_list("model_id", flat=True)[:500]
            )
    except DatabaseError:
        return []
