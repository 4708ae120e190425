"""Preflight: the model exists exactly in the catalog and prompt + max_tokens fit its context length.

Token counts come from the model's own tokenizer when one is available offline (the `tokenizers`
package and a tokenizer.json in the local Hugging Face cache); otherwise from a conservative estimate
that over-counts, so a request that passes here does not overflow upstream.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from together_dash.catalog.models import ModelInfo
from together_dash.catalog.services import close_matches, suggest_successor

# Real tokenizers give about 4 bytes of English per token; 3 over-counts English and most code.
BYTES_PER_TOKEN = 3
# Chat templates wrap every message in role markers; Together's own template adds a few per message.
TOKENS_PER_MESSAGE = 4
TOKENS_PER_REPLY = 3  # the assistant header that starts the reply
ESTIMATE_NAME = "estimate: ceil(utf8 bytes/3) + 4 per message"
ROLES = ("system", "user", "assistant", "tool")

Counter = Callable[[str], int]


class PreflightInputError(ValueError):
    """The request to check is malformed (no model, both or neither of prompt and messages, ...)."""


@dataclass(frozen=True, slots=True)
class PreflightRequest:
    """What to check: a model id, chat messages or a text prompt, and max_tokens."""

    model: str
    max_tokens: int
    messages: tuple[Mapping[str, Any], ...] | None = None
    prompt: str | None = None

    @classmethod
    def build(cls, model: Any, max_tokens: Any, messages: Any = None, prompt: Any = None) -> PreflightRequest:
        """Validate raw input (from a form, JSON or the command line) into a request."""
        model = model.strip() if isinstance(model, str) else ""
        if not model:
            raise PreflightInputError("model: a model id is required.")
        if (messages is None) == (prompt is None):
            raise PreflightInputError("Give either messages or a prompt, not both and not neither.")
        return cls(
            model=model,
            max_tokens=_max_tokens(max_tokens),
            messages=_messages(messages) if messages is not None else None,
            prompt=_prompt(prompt) if prompt is not None else None,
        )


def _max_tokens(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PreflightInputError("max_tokens: a whole number of at least 1 is required.")
    return value


def _prompt(value: Any) -> str:
    if not isinstance(value, str):
        raise PreflightInputError("prompt: must be a string.")
    return value


def _messages(value: Any) -> tuple[Mapping[str, Any], ...]:
    if not isinstance(value, list) or not value:
        raise PreflightInputError("messages: a non-empty list of {role, content} objects is required.")
    for number, message in enumerate(value, start=1):
        if not isinstance(message, Mapping) or "content" not in message:
            raise PreflightInputError(f"messages[{number}]: each message needs a role and a content.")
        if message.get("role") not in ROLES:
            raise PreflightInputError(f"messages[{number}]: role must be one of {', '.join(ROLES)}.")
    return tuple(value)


@dataclass(slots=True)
class PreflightResult:
    """The verdict, with every number behind it; `problems` says in words what is wrong."""

    model: str
    model_found: bool = False
    model_id: str | None = None
    model_state: str | None = None
    context_length: int | None = None
    prompt_tokens: int = 0
    max_tokens: int = 0
    total_tokens: int = 0
    fits: bool | None = None
    tokenizer: str = ESTIMATE_NAME
    close_matches: list[str] = field(default_factory=list)
    successor: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """The request can be sent as is."""
        return self.model_found and self.fits is True and not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


# ---- token counting ----------------------------------------------------------------------------------


def estimate_tokens(text: str) -> int:
    """Conservative token count of a text: one token per 3 UTF-8 bytes, rounded up."""
    return math.ceil(len(text.encode("utf-8")) / BYTES_PER_TOKEN)


def _content_text(content: Any) -> str:
    """The text of a message content; multimodal parts and other values count as their JSON."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [part.get("text") for part in content if isinstance(part, Mapping)]
        if all(isinstance(text, str) for text in texts) and len(texts) == len(content):
            return "".join(texts)
    return json.dumps(content, ensure_ascii=False)


def count_prompt_tokens(request: PreflightRequest) -> tuple[int, str]:
    """Prompt tokens of the request, and the name of the tokenizer that counted them."""
    counter, name = tokenizer_for(request.model)
    if request.prompt is not None:
        return counter(request.prompt), name
    messages = request.messages or ()
    body = sum(TOKENS_PER_MESSAGE + counter(_content_text(m.get("content"))) for m in messages)
    return body + TOKENS_PER_REPLY, name


def tokenizer_for(model_id: str) -> tuple[Counter, str]:
    """The model's own tokenizer when it is on this machine, else the documented estimate."""
    path = _local_tokenizer_file(model_id)
    if path is not None:
        counter = _load_tokenizer(str(path))
        if counter is not None:
            return counter, f"tokenizer.json of {model_id} (local Hugging Face cache)"
    return estimate_tokens, ESTIMATE_NAME


def _local_tokenizer_file(model_id: str) -> Path | None:
    """tokenizer.json of the model in the Hugging Face cache; never downloads anything."""
    home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    snapshots = home / "hub" / f"models--{model_id.replace('/', '--')}" / "snapshots"
    if not snapshots.is_dir():
        return None
    return next(iter(sorted(snapshots.glob("*/tokenizer.json"))), None)


@lru_cache(maxsize=8)
def _load_tokenizer(path: str) -> Counter | None:
    try:
        from tokenizers import Tokenizer  # optional: not a dependency of together-dash
    except ImportError:
        return None
    try:
        tokenizer = Tokenizer.from_file(path)
    except Exception:  # noqa: BLE001 - a corrupt cache file means: fall back to the estimate
        return None
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False).ids)


# ---- the check ---------------------------------------------------------------------------------------


def run_preflight(request: PreflightRequest) -> PreflightResult:
    """Check the model against the polled catalog and the token budget against its context length."""
    result = PreflightResult(model=request.model, max_tokens=request.max_tokens)
    result.prompt_tokens, result.tokenizer = count_prompt_tokens(request)
    result.total_tokens = result.prompt_tokens + request.max_tokens
    row = ModelInfo.objects.filter(model_id=request.model).first()
    if row is None:
        _not_in_catalog(result)
        return result
    result.model_id, result.model_state, result.context_length = row.model_id, row.state, row.context_length
    if row.is_removed:
        _removed(result, row)
        return result
    result.model_found = True
    _check_context(result)
    return result


def _not_in_catalog(result: PreflightResult) -> None:
    result.close_matches = close_matches(result.model)
    if not ModelInfo.objects.exists():
        result.problems.append("The model catalog is empty: run `manage.py poll_models` first.")
        return
    hint = f" Did you mean: {', '.join(result.close_matches)}?" if result.close_matches else ""
    result.problems.append(f"{result.model} is not in Together's model catalog (ids match exactly).{hint}")


def _removed(result: PreflightResult, row: ModelInfo) -> None:
    result.successor = row.successor or suggest_successor(row.model_id)
    result.close_matches = close_matches(result.model)
    when = f" on {row.removed_at:%Y-%m-%d}" if row.removed_at else ""
    instead = f" Its successor: {result.successor}." if result.successor else ""
    result.problems.append(f"{row.model_id} was removed from Together's catalog{when}.{instead}")


def _check_context(result: PreflightResult) -> None:
    if result.context_length is None:
        result.problems.append(f"{result.model_id} has no known context length; the check cannot be made.")
        return
    result.fits = result.total_tokens <= result.context_length
    if not result.fits:
        result.problems.append(
            f"{result.prompt_tokens} prompt tokens + {result.max_tokens} max_tokens = {result.total_tokens}, "
            f"over the context length of {result.context_length}: shorten the input, lower max_tokens "
            "or pick a model with a larger context."
        )


def check(
    model: Any, max_tokens: Any, messages: Sequence[Any] | None = None, prompt: str | None = None
) -> PreflightResult:
    """Validate raw input and run the preflight; raises PreflightInputError for malformed input."""
    return run_preflight(PreflightRequest.build(model, max_tokens, messages=messages, prompt=prompt))
