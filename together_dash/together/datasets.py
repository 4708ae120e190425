"""Validate a fine-tune dataset the way Together's upload check does, but report every problem.

The line rules are those of ``check_file`` in the together 1.5.x SDK (together/utils/files.py and
together/constants.py at 1.5.34), the last client check that validates every line's format, amended
where together 3.x changed them (together/lib/utils/files.py and lib/constants.py at 3.1.1): blank
lines are skipped, a conversation may carry a `tools` column and `tool` messages, and a message needs
a role but not a content. 3.x's own check_file stops at the file level (type, size, UTF-8, one JSON
object per non-blank line) and leaves a line's content to Together's server; we check both, so a file
is ok here exactly when 3.x's check passes it and the content rules hold
(tests/datasets/test_dataset_sdk_agreement.py holds us to both SDKs, and labels where they differ).
Where the SDK stops at the first problem, this reads the whole file and lists each problem with its
line number.

The file is streamed in binary, one line at a time, and the state kept between lines is a few counters,
so memory is bounded by the longest line rather than by the file. No Django here: the management
command, the upload page and the Celery task all call validate_dataset().
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import IO, Any

FINE_TUNE = "fine-tune"
EVAL = "eval"
PURPOSES = (FINE_TUNE, EVAL)

# The SDK's limits (together/constants.py at 1.5.34; unchanged in together/lib/constants.py at 3.1.1).
MAX_FILE_BYTES = int(50.1 * 2**30)
MIN_SAMPLES = 1
MAX_IMAGES_PER_SAMPLE = 10
MAX_IMAGE_URL_CHARS = len("data:image/jpeg;base64,") + 4 * (10 * 2**20) // 3
IMAGE_URL_PREFIXES = tuple(f"data:image/{kind};base64," for kind in ("jpeg", "png", "webp"))
ROLES = ("system", "user", "assistant", "tool")  # "tool" since together 3.x

# A format is recognised by its exact set of top-level keys, tried in the SDK's order. Our names; the
# SDK calls them general, conversation, instruction and preference_openai.
FORMAT_KEYS: dict[str, tuple[str, ...]] = {
    "text": ("text",),
    "conversation": ("messages",),
    "instruction": ("prompt", "completion"),
    "preference": ("input", "preferred_output", "non_preferred_output"),
}
# Keys a format may carry besides its own (together 3.x's JSONL_EXTRA_COLUMNS_MAP).
OPTIONAL_KEYS: dict[str, tuple[str, ...]] = {"conversation": ("tools",)}
FORMAT_HINT = (
    "`text`; `messages`; `prompt` and `completion`; or `input`, `preferred_output` and `non_preferred_output`"
)

# Our own bounds, so that no file can exhaust memory: a longer line is reported, not parsed, and past
# max_errors problems are counted rather than kept.
MAX_LINE_BYTES = 256 * 2**20
DEFAULT_MAX_ERRORS = 1000
PROGRESS_EVERY_BYTES = 2**20

TokenCounter = Callable[[str], int]
ProgressCallback = Callable[[int], None]


def estimate_tokens(text: str) -> int:
    """A deliberately high token count: one token per 3 bytes of UTF-8."""
    # Tokenizers average about 4 bytes per token on English and about 3 on CJK text, so this errs on
    # the side of warning about a sample that might not fit.
    return math.ceil(len(text.encode("utf-8")) / 3)


@dataclass(frozen=True)
class DatasetIssue:
    """One problem in a dataset: its 1-based line, or None for the file as a whole."""

    line: int | None
    message: str

    def to_json(self) -> dict[str, Any]:
        """The issue as {"line": int|null, "message": str}."""
        return {"line": self.line, "message": self.message}


@dataclass
class DatasetReport:
    """The verdict on one dataset file and every problem found in it."""

    ok: bool
    format: str | None
    samples: int
    errors: list[DatasetIssue]
    warnings: list[DatasetIssue]
    bytes_read: int = 0
    error_count: int = 0
    warning_count: int = 0

    def to_json(self) -> dict[str, Any]:
        """The report in the shape `validate_dataset --json` prints."""
        return {
            "ok": self.ok,
            "format": self.format,
            "samples": self.samples,
            "errors": [issue.to_json() for issue in self.errors],
            "warnings": [issue.to_json() for issue in self.warnings],
        }


class IssueLog:
    """Issues up to a limit, and a count of the rest."""

    def __init__(self, limit: int, noun: str) -> None:
        self.limit = limit
        self.noun = noun
        self.kept: list[DatasetIssue] = []
        self.total = 0

    def add(self, line: int | None, message: str) -> None:
        """Record one issue; past the limit it is only counted."""
        self.total += 1
        if len(self.kept) < self.limit:
            self.kept.append(DatasetIssue(line, message))

    def listed(self) -> list[DatasetIssue]:
        """The kept issues, then one line saying how many more there were."""
        if self.total <= len(self.kept):
            return list(self.kept)
        hidden = self.total - len(self.kept)
        return [*self.kept, DatasetIssue(None, f"{hidden:,} more {self.noun} not listed")]


@dataclass
class _Scan:
    """What one validation carries from line to line: a few counters, whatever the file's size."""

    purpose: str
    errors: IssueLog
    warnings: IssueLog
    context_length: int | None = None
    token_counter: TokenCounter = estimate_tokens
    progress: ProgressCallback | None = None
    format: str | None = None
    format_line: int = 0
    samples: int = 0
    bytes_read: int = 0
    next_progress: int = PROGRESS_EVERY_BYTES

    def tick(self) -> None:
        """Tell the progress callback how far we are, about once per PROGRESS_EVERY_BYTES."""
        if self.progress is not None and self.bytes_read >= self.next_progress:
            self.progress(self.bytes_read)
            self.next_progress = self.bytes_read + PROGRESS_EVERY_BYTES

    def report(self) -> DatasetReport:
        """The finished report."""
        return DatasetReport(
            ok=self.errors.total == 0,
            format=self.format,
            samples=self.samples,
            errors=self.errors.listed(),
            warnings=self.warnings.listed(),
            bytes_read=self.bytes_read,
            error_count=self.errors.total,
            warning_count=self.warnings.total,
        )


@dataclass
class _Turns:
    """What the conversation rules carry from one message to the next."""

    previous_role: str | None = None
    has_assistant: bool = False
    multimodal: bool | None = None
    images: int = 0


def validate_dataset(
    source: str | os.PathLike[str] | IO[bytes],
    *,
    purpose: str = FINE_TUNE,
    filename: str | None = None,
    context_length: int | None = None,
    token_counter: TokenCounter | None = None,
    progress: ProgressCallback | None = None,
    max_errors: int = DEFAULT_MAX_ERRORS,
) -> DatasetReport:
    """Check a dataset (a path or a binary stream) and report every problem with its line number.

    `filename` names the file when `source` does not (its extension decides the checker, as in the
    SDK). With `context_length`, samples estimated longer than it are warned about.
    """
    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {', '.join(PURPOSES)}, not {purpose!r}")
    scan = _Scan(
        purpose=purpose,
        errors=IssueLog(max_errors, "errors"),
        warnings=IssueLog(max_errors, "warnings"),
        context_length=context_length,
        token_counter=token_counter or estimate_tokens,
        progress=progress,
    )
    if isinstance(source, str | os.PathLike):
        _check_path(Path(source), filename, scan)
    else:
        _check_stream(source, filename or str(getattr(source, "name", "")), scan)
    if progress is not None:
        progress(scan.bytes_read)
    return scan.report()


def _check_path(path: Path, filename: str | None, scan: _Scan) -> None:
    """Open the file, or report that there is none."""
    if not path.is_file():
        scan.errors.add(None, f"File not found: {path}")
        return
    with path.open("rb") as stream:
        _check_stream(stream, filename or path.name, scan)


def _check_stream(stream: IO[bytes], name: str, scan: _Scan) -> None:
    """Size and extension first, then the content, as the SDK does."""
    size = _remaining_size(stream)
    size_ok = _check_size(size, scan)
    check_content = _content_checker(PurePath(name).suffix, scan)
    # Past 50.1 GB the upload is refused whatever the content, so the content is not read.
    if check_content is not None and size_ok:
        check_content(stream, scan)


def _remaining_size(stream: IO[bytes]) -> int | None:
    """Bytes left in a seekable stream, or None when it cannot tell."""
    try:
        if not stream.seekable():
            return None
        start = stream.tell()
        end = stream.seek(0, os.SEEK_END)
        stream.seek(start)
    except (AttributeError, OSError):
        return None
    return end - start


def _check_size(size: int | None, scan: _Scan) -> bool:
    """An empty file and one over 50.1 GB are refused; True when the content is worth reading."""
    if size == 0:
        scan.errors.add(None, "The file is empty.")
        return False
    if size is not None and size > MAX_FILE_BYTES:
        scan.errors.add(None, f"The file is {size / 2**30:,.1f} GB; Together accepts at most 50.1 GB.")
        return False
    return True


def _content_checker(suffix: str, scan: _Scan) -> Callable[[IO[bytes], _Scan], None] | None:
    """The checker for this extension, or None after reporting why the file type is refused."""
    if suffix == ".jsonl":
        return _check_jsonl
    if suffix == ".csv" and scan.purpose == EVAL:
        return _check_csv
    scan.errors.add(None, _refused_file_type(suffix, scan.purpose))
    return None


def _refused_file_type(suffix: str, purpose: str) -> str:
    """Why a file with this extension cannot be used for this purpose."""
    if suffix == ".csv":
        return f"CSV files are not accepted for {purpose}; use JSONL (.jsonl)."
    if suffix == ".parquet" and purpose == FINE_TUNE:
        # The SDK needs pyarrow for these (and fails without it); together-dash does not install pyarrow.
        return "Parquet (pre-tokenised) files are not checked here; check them with `together files check`."
    if suffix == ".parquet":
        return f"Parquet files are not accepted for {purpose}; use JSONL (.jsonl) or CSV."
    if suffix.lower() in {".jsonl", ".csv", ".parquet"}:
        return f"Unsupported file extension {suffix!r}: extensions are case-sensitive ({suffix.lower()!r})."
    shown = repr(suffix) if suffix else "(none)"
    return f"Unsupported file extension {shown}: Together accepts .jsonl (and .parquet when pre-tokenised)."


# ---- JSONL ----------------------------------------------------------------------------------------


def _check_jsonl(stream: IO[bytes], scan: _Scan) -> None:
    """Every non-blank line, each on its own, then the sample count; blank lines are skipped (3.x)."""
    for number, raw in enumerate(_read_lines(stream, scan), start=1):
        if raw is not None and _is_blank(raw):
            continue
        scan.samples += 1
        _check_line(number, raw, scan)
    _check_sample_count(scan)


def _is_blank(raw: bytes) -> bool:
    """Only whitespace, as str.strip() sees it (3.x strips each decoded line before parsing it)."""
    if not raw.strip():
        return True
    try:
        return not raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        return False


def _read_lines(stream: IO[bytes], scan: _Scan) -> Iterator[bytes | None]:
    """The stream's lines as Python's text mode splits them; None for a line too long to parse."""
    while raw := stream.readline(MAX_LINE_BYTES + 1):
        scan.bytes_read += len(raw)
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            scan.bytes_read += _skip_rest_of_line(stream)
            yield None
        elif b"\r" in raw:
            yield from _split_carriage_returns(raw)
        else:
            yield raw
        scan.tick()


def _split_carriage_returns(raw: bytes) -> list[bytes]:
    """Split at a lone \\r too: the SDK reads in text mode, where \\r, \\n and \\r\\n all end a line."""
    # 0x0D never occurs inside a multi-byte UTF-8 character, so splitting bytes is safe.
    body = raw[:-1] if raw.endswith(b"\n") else raw
    if body.endswith(b"\r"):
        body = body[:-1]
    return body.split(b"\r")


def _skip_rest_of_line(stream: IO[bytes]) -> int:
    """Read past the end of an over-long line; returns the bytes skipped."""
    skipped = 0
    while chunk := stream.readline(2**20):
        skipped += len(chunk)
        if chunk.endswith(b"\n"):
            break
    return skipped


def _check_sample_count(scan: _Scan) -> None:
    """At least MIN_SAMPLES samples."""
    if scan.samples < MIN_SAMPLES:
        scan.errors.add(None, f"The file has {scan.samples} samples; Together needs at least {MIN_SAMPLES}.")


def _check_line(number: int, raw: bytes | None, scan: _Scan) -> None:
    """Every rule for one line; its problems are reported with its number."""
    sample = _parse_line(number, raw, scan)
    if sample is None or scan.purpose == EVAL:  # the SDK checks no format for eval files
        return
    problems: list[str] = []
    sample_format = _detect_format(sample, problems)
    if sample_format is not None:
        FORMAT_CHECKS[sample_format](sample, problems)
        _check_same_format(number, sample_format, scan, problems)
        _warn_if_too_long(number, sample_format, sample, scan)
    for problem in problems:
        scan.errors.add(number, problem)


def _parse_line(number: int, raw: bytes | None, scan: _Scan) -> dict[str, Any] | None:
    """The line's JSON object, or None after reporting why there is none."""
    if raw is None:
        scan.errors.add(number, f"longer than {MAX_LINE_BYTES // 2**20} MiB; not checked")
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        message = f"not valid UTF-8 ({exc.reason} at byte {exc.start + 1} of the line); the file is refused"
        scan.errors.add(number, message)
        return None
    value = _load_json(number, text, scan)
    if value is _NOT_JSON:
        return None
    if not isinstance(value, dict):
        scan.errors.add(number, f"must be a JSON object, found {_kind(value)}")
        return None
    return value


_NOT_JSON = object()


def _load_json(number: int, text: str, scan: _Scan) -> Any:
    """Parse with the standard json module, as the SDK does; _NOT_JSON after reporting a failure."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        scan.errors.add(number, _json_error(text, exc))
    except (ValueError, RecursionError) as exc:  # an integer with too many digits, nesting too deep
        scan.errors.add(number, f"invalid JSON: {exc}")
    return _NOT_JSON


def _json_error(text: str, exc: json.JSONDecodeError) -> str:
    """What is wrong with the line's JSON, and where in the line."""
    # exc.colno would count from the line's own newline onwards; a character offset does not.
    at_end = exc.pos >= len(text.rstrip())
    return f"invalid JSON: {exc.msg} " + (
        "at the end of the line" if at_end else f"at character {exc.pos + 1}"
    )


def _detect_format(sample: dict[str, Any], problems: list[str]) -> str | None:
    """The format whose keys the sample has; extra keys and no match at all are problems."""
    for name, keys in FORMAT_KEYS.items():
        if all(key in sample for key in keys):
            extra = [key for key in sample if key not in keys and key not in OPTIONAL_KEYS.get(name, ())]
            if extra:
                problems.append(f"unexpected key {_names(extra)}: a {name} sample has only {_names(keys)}")
            return name
    problems.append(f"no dataset format has the keys {_names(sample)}; expected {FORMAT_HINT}")
    return None


def _check_same_format(number: int, sample_format: str, scan: _Scan, problems: list[str]) -> None:
    """The first recognised line sets the file's format; every other line must share it."""
    if scan.format is None:
        scan.format, scan.format_line = sample_format, number
    elif sample_format != scan.format:
        problems.append(
            f"in the {sample_format} format, but line {scan.format_line} is in the {scan.format} format; "
            "all samples must use one format"
        )


def _warn_if_too_long(number: int, sample_format: str, sample: dict[str, Any], scan: _Scan) -> None:
    """Warn when the sample's estimated length exceeds the chosen model's context length."""
    if scan.context_length is None:
        return
    tokens = scan.token_counter("\n".join(_sample_texts(sample_format, sample)))
    if tokens > scan.context_length:
        limit = scan.context_length
        scan.warnings.add(number, f"about {tokens:,} tokens, over the model's context length of {limit:,}")


# ---- the formats ----------------------------------------------------------------------------------


def _check_text(sample: dict[str, Any], problems: list[str]) -> None:
    """{"text": content}; images are allowed."""
    _check_column(sample, "text", "user", problems)


def _check_instruction(sample: dict[str, Any], problems: list[str]) -> None:
    """{"prompt": content, "completion": content}; the completion is the assistant's, so no images."""
    _check_column(sample, "prompt", "user", problems)
    _check_column(sample, "completion", "assistant", problems)


def _check_column(sample: dict[str, Any], key: str, role: str, problems: list[str]) -> None:
    """One top-level content value, read as a message of this role."""
    _, images = _check_content(sample[key], role, key, problems)
    if images > MAX_IMAGES_PER_SAMPLE:
        problems.append(f"{key}: {images} images; at most {MAX_IMAGES_PER_SAMPLE} are allowed")


def _check_conversation(sample: dict[str, Any], problems: list[str]) -> None:
    """{"messages": [...]} with at least one assistant message, and optionally {"tools": [...]}."""
    _check_messages(sample["messages"], "messages", True, problems)
    if "tools" in sample:
        _check_tools(sample["tools"], problems)


def _check_tools(tools: Any, problems: list[str]) -> None:
    """The tool definitions the conversation may call: a list of objects."""
    if not isinstance(tools, list):
        problems.append(f"tools: must be a list of tool definitions, found {_kind(tools)}")
        return
    for index, tool in enumerate(tools):
        if not isinstance(tool, dict):
            problems.append(f"tools[{index}]: must be an object, found {_kind(tool)}")


def _check_preference(sample: dict[str, Any], problems: list[str]) -> None:
    """{"input": {"messages": [...]}, "preferred_output": [one], "non_preferred_output": [one]}."""
    _check_preference_input(sample["input"], problems)
    for key in ("preferred_output", "non_preferred_output"):
        _check_preference_output(sample[key], key, problems)


def _check_preference_input(value: Any, problems: list[str]) -> None:
    """The prompt conversation: no assistant needed, and it must not end with one."""
    if not isinstance(value, dict):
        problems.append(f"input: must be an object with `messages`, found {_kind(value)}")
        return
    if "messages" not in value:
        problems.append("input: missing `messages`")
        return
    messages = value["messages"]
    _check_messages(messages, "input.messages", False, problems)
    last = messages[-1] if isinstance(messages, list) and messages else None
    if isinstance(last, dict) and last.get("role") == "assistant":
        problems.append("input.messages: the last message must not be the assistant's")


def _check_preference_output(value: Any, key: str, problems: list[str]) -> None:
    """A list of exactly one assistant message."""
    if not isinstance(value, list) or len(value) != 1:
        found = f"{len(value)} items" if isinstance(value, list) else _kind(value)
        problems.append(f"{key}: must be a list of exactly one assistant message, found {found}")
        return
    message = value[0]
    if not isinstance(message, dict):
        problems.append(f"{key}[0]: must be an object, found {_kind(message)}")
        return
    if "role" not in message:
        problems.append(f"{key}[0]: missing `role` (it must be `assistant`)")
    elif message["role"] != "assistant":
        problems.append(f"{key}[0]: role must be `assistant`, found {_short(message['role'])}")
    if "content" not in message:
        problems.append(f"{key}[0]: missing `content`")
        return
    _check_content(message["content"], "assistant", f"{key}[0].content", problems)


FORMAT_CHECKS: dict[str, Callable[[dict[str, Any], list[str]], None]] = {
    "text": _check_text,
    "conversation": _check_conversation,
    "instruction": _check_instruction,
    "preference": _check_preference,
}


# ---- conversations --------------------------------------------------------------------------------


def _check_messages(messages: Any, where: str, require_assistant: bool, problems: list[str]) -> None:
    """A non-empty list of messages: roles, turns, weights, contents and images."""
    if not isinstance(messages, list):
        problems.append(f"{where}: must be a list of messages, found {_kind(messages)}")
        return
    if not messages:
        problems.append(f"{where}: is empty")
        return
    turns = _Turns()
    for index, message in enumerate(messages):
        _check_message(message, f"{where}[{index}]", turns, problems)
    if turns.images > MAX_IMAGES_PER_SAMPLE:
        problems.append(f"{where}: {turns.images} images; at most {MAX_IMAGES_PER_SAMPLE} are allowed")
    if require_assistant and not turns.has_assistant:
        problems.append(f"{where}: no assistant message; at least one is required")


def _check_message(message: Any, at: str, turns: _Turns, problems: list[str]) -> None:
    """One message: an object with a role, a content if any, and an optional weight of 0 or 1.

    together 3.x requires only the role (a tool-calling assistant message may have no content).
    """
    if not isinstance(message, dict):
        problems.append(f"{at}: must be an object, found {_kind(message)}")
        turns.previous_role = None
        return
    if "role" not in message:
        problems.append(f"{at}: missing `role`")
    weight = _check_weight(message, at, problems)
    role = _check_role(message, at, turns, problems)
    if "content" in message:
        _check_message_content(message["content"], role, weight, at, turns, problems)


def _check_weight(message: dict[str, Any], at: str, problems: list[str]) -> int | None:
    """The message's weight when it is a valid one, else None."""
    if "weight" not in message:
        return None
    weight = message["weight"]
    # true and false pass too: bool is an int in Python and the SDK checks isinstance(weight, int).
    if isinstance(weight, int) and weight in (0, 1):
        return weight
    problems.append(f"{at}: weight must be the integer 0 or 1, found {_short(weight)}")
    return None


def _check_role(message: dict[str, Any], at: str, turns: _Turns, problems: list[str]) -> str | None:
    """A known role, and not the same as the previous message's; None when it is unusable."""
    role = message.get("role")
    previous = turns.previous_role
    turns.previous_role = role if isinstance(role, str) else None
    if "role" not in message:
        return None
    if not isinstance(role, str) or role not in ROLES:
        problems.append(f"{at}: role {_short(role)} is not one of {', '.join(ROLES)}")
        return None
    turns.has_assistant |= role == "assistant"
    # The SDK's alternation rule is exactly this: no role twice in a row (system, user, system is fine).
    if role == previous:
        problems.append(f"{at}: a second `{role}` message in a row; roles must alternate")
    return role


def _check_message_content(
    content: Any, role: str | None, weight: int | None, at: str, turns: _Turns, problems: list[str]
) -> None:
    """The content itself, then the rules across messages: no mixed kinds, no weighted images."""
    multimodal, images = _check_content(content, role, f"{at}.content", problems)
    if images and weight:
        problems.append(f"{at}: a message with images must have weight 0, found {weight}")
    if multimodal is None:
        return
    if turns.multimodal is None:
        turns.multimodal = multimodal
    elif turns.multimodal != multimodal:
        problems.append(f"{at}.content: a sample's contents must be all strings or all lists, not both")
    turns.images += images


# ---- contents -------------------------------------------------------------------------------------


def _check_content(content: Any, role: str | None, at: str, problems: list[str]) -> tuple[bool | None, int]:
    """A string, or a list of text/image_url parts; returns (is a list, valid images), None if neither."""
    if isinstance(content, str):
        return False, 0
    if not isinstance(content, list):
        problems.append(f"{at}: must be a string or a list of content parts, found {_kind(content)}")
        return None, 0
    images = sum(_check_part(part, role, f"{at}[{index}]", problems) for index, part in enumerate(content))
    return True, images


def _check_part(part: Any, role: str | None, at: str, problems: list[str]) -> int:
    """One content part; returns 1 for a valid image, else 0."""
    if not isinstance(part, dict):
        problems.append(f"{at}: must be an object, found {_kind(part)}")
        return 0
    if "type" not in part:
        problems.append(f"{at}: missing `type`")
        return 0
    kind = part["type"]
    if kind == "text":
        if not isinstance(part.get("text"), str):
            problems.append(f"{at}: a text part needs a string `text`, found {_short(part.get('text'))}")
        return 0
    if kind == "image_url":
        return _check_image(part, role, at, problems)
    problems.append(f"{at}: type must be `text` or `image_url`, found {_short(kind)}")
    return 0


def _check_image(part: dict[str, Any], role: str | None, at: str, problems: list[str]) -> int:
    """An image: in a user message, as a base64 data URL of a JPEG, PNG or WebP under 10 MB."""
    if role is not None and role != "user":
        problems.append(f"{at}: images are allowed only in user messages, not in `{role}` ones")
    holder = part.get("image_url")
    url = holder.get("url") if isinstance(holder, dict) else None
    if not isinstance(holder, dict):
        problems.append(f"{at}: `image_url` must be an object with a `url`, found {_kind(holder)}")
    elif not isinstance(url, str) or not url:
        problems.append(f"{at}: `image_url.url` must be a non-empty string, found {_short(url)}")
    elif not url.startswith(IMAGE_URL_PREFIXES):
        problems.append(f"{at}: an image must be a data:image/jpeg|png|webp;base64 URL, found {_short(url)}")
    elif len(url) > MAX_IMAGE_URL_CHARS:
        problems.append(f"{at}: the image is about {len(url) * 3 // 4:,} bytes; the limit is 10 MB")
    else:
        return 1
    return 0


# ---- eval CSV -------------------------------------------------------------------------------------


def _check_csv(stream: IO[bytes], scan: _Scan) -> None:
    """An eval CSV: UTF-8, a header row, and as many fields on every row as in the header."""
    text = io.TextIOWrapper(stream, encoding="utf-8", newline="")
    try:
        _check_csv_rows(csv.DictReader(text), scan)
    except UnicodeDecodeError as exc:
        scan.errors.add(None, f"The file is not valid UTF-8 ({exc.reason}).")
    except csv.Error as exc:
        scan.errors.add(None, f"Malformed CSV: {exc}.")
    finally:
        text.detach()  # the caller closes the stream, not the wrapper
    with contextlib.suppress(OSError):  # an unseekable stream cannot tell
        scan.bytes_read = stream.tell()


def _check_csv_rows(reader: csv.DictReader[str], scan: _Scan) -> None:
    """Each row against the header; a row's line is the file line where it ends."""
    if not reader.fieldnames:
        scan.errors.add(None, "The CSV file has no header row.")
        return
    expected = len(reader.fieldnames)
    for number, row in enumerate(reader, start=1):
        scan.samples = number
        if None in row or None in row.values():
            scan.errors.add(reader.line_num, f"a different number of fields than the header's {expected}")
    _check_sample_count(scan)


# ---- the text of a sample, for the length estimate -----------------------------------------------


def _sample_texts(sample_format: str, sample: dict[str, Any]) -> Iterator[str]:
    """The text a sample trains on; images are left out of the estimate."""
    if sample_format == "conversation":
        yield from _messages_texts(sample["messages"])
    elif sample_format == "preference":
        prompt = sample["input"].get("messages") if isinstance(sample["input"], dict) else None
        yield from _messages_texts(prompt)
        # Each output is trained with the prompt on its own: the longer one decides.
        outputs = ("preferred_output", "non_preferred_output")
        yield max(("\n".join(_messages_texts(sample[key])) for key in outputs), key=len)
    else:
        for key in FORMAT_KEYS[sample_format]:
            yield from _content_texts(sample[key])


def _messages_texts(messages: Any) -> Iterator[str]:
    """The texts of a list of messages, skipping anything malformed."""
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, dict):
                yield from _content_texts(message.get("content"))


def _content_texts(content: Any) -> Iterator[str]:
    """A string content, or the text parts of a list content."""
    if isinstance(content, str):
        yield content
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                yield part["text"]


# ---- wording --------------------------------------------------------------------------------------


def _kind(value: Any) -> str:
    """The JSON type of a value, as a phrase."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _short(value: Any) -> str:
    """A short rendering of a scalar value, or its type for anything larger."""
    if isinstance(value, str):
        return json.dumps(value[:60] + ("..." if len(value) > 60 else ""), ensure_ascii=False)
    if value is None or isinstance(value, bool | int | float):
        return json.dumps(value)
    return _kind(value)


def _names(keys: Any) -> str:
    """Keys as `a`, `b`, ... (at most ten)."""
    keys = list(keys)
    shown = ", ".join(f"`{key[:60]}`" for key in keys[:10])
    return shown + (f" and {len(keys) - 10} more" if len(keys) > 10 else "")
