"""poll_batches: upsert batch jobs per key; once a batch ends, read its files for failures and the remainder.

The remainder is the input lines whose custom_id has no successful output line: after a 402 stopped a
batch half-way, it is exactly the JSONL to resubmit once credits are back.
"""
from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from together_dash.jobs.models import BatchJob, remainder_dir
from together_dash.keys.crypto import DecryptionError
from together_dash.keys.models import TogetherKey
from together_dash.pollers.fanout import FanOutConfig, KeyRef, fan_out, key_refs
from together_dash.pollers.runs import PollReport, active_keys, keys_due, record_outcomes, run_poller
from together_dash.together import types
from together_dash.together.client import AsyncTogetherClient, TogetherAPIError, TogetherClient
from together_dash.together.redact import redact

logger = logging.getLogger(__name__)

POLLER = "poll_batches"
FAILED_SAMPLE_SIZE = 50
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")
# A claim on a batch's files older than this is presumed dead (the worker was killed mid-download).
FILES_LEASE = timedelta(minutes=15)
MAX_DISPATCH_PER_POLL = 20

Dispatch = Callable[[int], None]


def poll_batches(
    token: str | None = None, dispatch: Dispatch | None = None, config: FanOutConfig | None = None
) -> PollReport:
    """Poll batches with every active key; hand finished ones to dispatch (default: read their files now)."""
    return run_poller(POLLER, lambda report: _poll(report, dispatch or process_batch_files, config), token)


def _poll(report: PollReport, dispatch: Dispatch, config: FanOutConfig | None) -> None:
    now = timezone.now()
    keys, report.skipped = keys_due(POLLER, active_keys(), now)
    refs, broken = key_refs(keys)
    outcomes = broken + fan_out(refs, _fetch_batches, config)
    record_outcomes(POLLER, outcomes, report)
    listings = [(o.key.id, o.value) for o in outcomes if o.ok and o.value is not None]
    # One read for every key: keys of one organization list the same batches.
    ids = {batch.id for _, listing in listings for batch in listing}
    existing = BatchJob.objects.in_bulk(ids, field_name="batch_id")
    for key_id, listing in listings:
        apply_batches(key_id, listing, existing, now)
    report.count("batches", len(ids))
    for batch_pk in files_to_read(now):
        dispatch(batch_pk)
        report.count("files_dispatched")


async def _fetch_batches(client: AsyncTogetherClient, key: KeyRef) -> list[types.BatchJob]:
    return (await client.list_batches()).data


def batch_fields(batch: types.BatchJob) -> dict[str, Any]:
    """BatchJob values from an API batch object."""
    return {
        "status": (batch.status or "")[:20],
        "endpoint": (batch.endpoint or "")[:100],
        "model_id": (batch.model_id or "")[:255],
        "input_file_id": (batch.input_file_id or "")[:100],
        "output_file_id": (batch.output_file_id or "")[:100],
        "error_file_id": (batch.error_file_id or "")[:100],
        "error": redact(batch.error or "")[:1000],
        "progress": batch.progress,
        "file_size_bytes": batch.file_size_bytes,
        "created_at": batch.created_at,
        "completed_at": batch.completed_at,
        "job_deadline": batch.job_deadline,
        "raw": dict(batch.raw),
    }


def apply_batches(
    key_id: int, batches: list[types.BatchJob], existing: dict[str, BatchJob], now: datetime
) -> None:
    """Upsert the batches one key listed (the first key to list a batch keeps it)."""
    for batch in batches:
        existing[batch.id] = upsert_batch(existing.get(batch.id), key_id, batch, now)


def upsert_batch(row: BatchJob | None, key_id: int, batch: types.BatchJob, now: datetime) -> BatchJob:
    """Create or update one batch by its Together id; an unchanged batch is not written."""
    fields = batch_fields(batch)
    if row is None:
        defaults = {**fields, "upstream_key_id": key_id, "first_seen": now, "status_changed_at": now}
        defaults["files_state"] = _files_state_for(batch)
        row, created = BatchJob.objects.get_or_create(batch_id=batch.id, defaults=defaults)
        if created:
            return row
    changes = {name: value for name, value in fields.items() if getattr(row, name) != value}
    if "status" in changes:
        changes["status_changed_at"] = now
    if changes:
        BatchJob.objects.filter(pk=row.pk).update(**changes)
        for name, value in changes.items():
            setattr(row, name, value)
    if batch.is_terminal and row.files_state == BatchJob.FilesState.WAITING:
        # Conditional: a reader may already have moved the files on; never send them back.
        waiting = BatchJob.objects.filter(pk=row.pk, files_state=BatchJob.FilesState.WAITING)
        waiting.update(files_state=BatchJob.FilesState.PENDING)
        row.files_state = BatchJob.FilesState.PENDING
    return row


def _files_state_for(batch: types.BatchJob) -> str:
    return BatchJob.FilesState.PENDING if batch.is_terminal else BatchJob.FilesState.WAITING


def _claimable(now: datetime) -> Q:
    pending = Q(files_state=BatchJob.FilesState.PENDING)
    abandoned = Q(files_state=BatchJob.FilesState.PROCESSING, files_claimed_at__lt=now - FILES_LEASE)
    return (pending | abandoned) & Q(files_attempts__lt=BatchJob.MAX_FILE_ATTEMPTS)


def files_to_read(now: datetime) -> list[int]:
    """Finished batches whose files still need reading (or whose reader died)."""
    return list(BatchJob.objects.filter(_claimable(now)).order_by("id").values_list("pk", flat=True)[
        :MAX_DISPATCH_PER_POLL
    ])


# ---- files -------------------------------------------------------------------------------------------

@dataclass(slots=True)
class BatchFiles:
    """What a finished batch's files say."""

    succeeded_ids: set[str] = field(default_factory=set)
    succeeded_count: int = 0
    failed_count: int = 0
    failed_sample: list[dict[str, Any]] = field(default_factory=list)
    request_count: int | None = None
    remainder_count: int = 0
    remainder_file: str = ""

    def add_failure(self, custom_id: str, message: str, code: str) -> None:
        self.failed_count += 1
        if len(self.failed_sample) < FAILED_SAMPLE_SIZE:
            self.failed_sample.append({"custom_id": custom_id, "message": message[:300], "code": code[:50]})


def process_batch_files(batch_pk: int) -> bool:
    """Read a finished batch's files (claimed with a conditional UPDATE); False when not claimed or failed."""
    now = timezone.now()
    claimed = BatchJob.objects.filter(_claimable(now), pk=batch_pk).update(
        files_state=BatchJob.FilesState.PROCESSING,
        files_claimed_at=now,
        files_attempts=F("files_attempts") + 1,
    )
    if not claimed:
        return False
    batch = BatchJob.objects.select_related("upstream_key").get(pk=batch_pk)
    try:
        files = read_batch_files(batch)
    except (TogetherAPIError, DecryptionError, OSError, ValueError) as exc:
        _files_failed(batch, exc)
        return False
    BatchJob.objects.filter(pk=batch_pk, files_state=BatchJob.FilesState.PROCESSING).update(
        files_state=BatchJob.FilesState.DONE,
        files_error="",
        request_count=files.request_count,
        succeeded_count=files.succeeded_count,
        failed_count=files.failed_count,
        failed_sample=files.failed_sample,
        remainder_count=files.remainder_count,
        remainder_file=files.remainder_file,
    )
    return True


def _files_failed(batch: BatchJob, exc: Exception) -> None:
    secret = _secret_or_empty(batch.upstream_key)
    message = redact(str(exc), (secret,) if secret else ())[:500]
    state = BatchJob.FilesState.PENDING
    if batch.files_attempts >= BatchJob.MAX_FILE_ATTEMPTS:
        state = BatchJob.FilesState.FAILED
    BatchJob.objects.filter(pk=batch.pk).update(files_state=state, files_error=message)
    logger.warning("batch %s: reading files failed: %s", batch.batch_id, message)


def _secret_or_empty(key: TogetherKey | None) -> str:
    try:
        return key.secret if key is not None else ""
    except DecryptionError:
        return ""


def read_batch_files(batch: BatchJob) -> BatchFiles:
    """Count failures and successes; when some requests lack an output, store the remainder JSONL."""
    files = BatchFiles()
    with client_for(batch.upstream_key) as client:
        if batch.error_file_id:
            _read_errors(client, batch.error_file_id, files)
        if batch.output_file_id:
            _read_outputs(client, batch.output_file_id, files)
        complete = batch.status == types.BatchStatus.COMPLETED and files.failed_count == 0
        if complete or not batch.input_file_id:
            files.request_count = files.succeeded_count + files.failed_count
            return files
        _write_remainder(client, batch, files)
    return files


def client_for(key: TogetherKey | None) -> TogetherClient:
    if key is None:
        raise ValueError("the batch has no upstream key to read its files with")
    return TogetherClient(
        key.secret,
        base_url=settings.TOGETHER_BASE_URL,
        timeout=settings.POLLER_TIMEOUT,
        connect_timeout=settings.TOGETHER_CONNECT_TIMEOUT,
        max_retries=2,
        max_retry_wait=settings.POLLER_MAX_RETRY_WAIT,
    )


def _read_errors(client: TogetherClient, file_id: str, files: BatchFiles) -> None:
    for item in _json_lines(client.iter_file_content(file_id)):
        error = item.get("error")
        if not isinstance(error, dict):
            error = {"message": str(error)}
        custom_id = str(item.get("custom_id", ""))
        files.add_failure(custom_id, str(error.get("message", "")), str(error.get("code", "")))


def _read_outputs(client: TogetherClient, file_id: str, files: BatchFiles) -> None:
    for item in _json_lines(client.iter_file_content(file_id)):
        custom_id = str(item.get("custom_id", ""))
        status = _output_status(item)
        if 200 <= status < 300:
            files.succeeded_ids.add(custom_id)
            files.succeeded_count += 1
        else:
            files.add_failure(custom_id, _output_message(item), str(status))


def _output_status(item: dict[str, Any]) -> int:
    response = item.get("response")
    status = response.get("status_code", 200) if isinstance(response, dict) else 200
    return status if isinstance(status, int) else 200


def _output_message(item: dict[str, Any]) -> str:
    response = item.get("response")
    body = response.get("body") if isinstance(response, dict) else None
    error = body.get("error") if isinstance(body, dict) else None
    return str(error.get("message", "")) if isinstance(error, dict) else str(error or "")


def _write_remainder(client: TogetherClient, batch: BatchJob, files: BatchFiles) -> None:
    directory = remainder_dir()
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=".remainder-", suffix=".jsonl")
    requests = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            for line, has_output in _input_lines(client, batch.input_file_id, files.succeeded_ids):
                requests += 1
                if not has_output:
                    out.write(line + "\n")
                    files.remainder_count += 1
        files.request_count = requests
        if files.remainder_count:
            files.remainder_file = remainder_name(batch.batch_id)
            os.replace(tmp_name, directory / files.remainder_file)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)


def remainder_name(batch_id: str) -> str:
    """A file name for the batch's remainder; the id comes from upstream, so it may not steer the path."""
    return _UNSAFE_NAME.sub("_", batch_id).lstrip(".")[:200] + ".jsonl"


def _input_lines(client: TogetherClient, file_id: str, done: set[str]) -> Iterator[tuple[str, bool]]:
    """Each input line (as uploaded) with whether its custom_id has a successful output."""
    for raw in iter_lines(client.iter_file_content(file_id)):
        line = raw.decode("utf-8", "replace")
        yield line, _custom_id(line) in done


def _custom_id(line: str) -> str | None:
    try:
        item = json.loads(line)
    except ValueError:
        return None
    value = item.get("custom_id") if isinstance(item, dict) else None
    return str(value) if value is not None else None


def batch_remainder(batch_id: str) -> Iterator[str]:
    """The input lines of a batch that have no successful output, read from Together now (streamed)."""
    batch = BatchJob.objects.select_related("upstream_key").get(batch_id=batch_id)
    if not batch.input_file_id:
        return
    with client_for(batch.upstream_key) as client:
        files = BatchFiles()
        if batch.output_file_id:
            _read_outputs(client, batch.output_file_id, files)
        for line, has_output in _input_lines(client, batch.input_file_id, files.succeeded_ids):
            if not has_output:
                yield line


# ---- JSONL over byte chunks ---------------------------------------------------------------------------

def iter_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Non-blank lines from a stream of byte chunks, without holding more than one line at a time."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if line.strip():
                yield line.rstrip(b"\r")
    if pending.strip():
        yield pending.rstrip(b"\r")


def _json_lines(chunks: Iterable[bytes]) -> Iterator[dict[str, Any]]:
    """JSON objects, one per line; a line that is not one is skipped (output files are Together's)."""
    for line in iter_lines(chunks):
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict):
            yield item
