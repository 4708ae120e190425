"""Dataset validations for the upload page: store the upload, validate it, record the verdict."""
from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.utils import timezone

from together_dash.catalog.services import context_length_for
from together_dash.datasets.models import DatasetValidation
from together_dash.together.datasets import validate_dataset

log = logging.getLogger(__name__)

DEFAULT_UPLOAD_MAX_BYTES = 200 * 2**20
DEFAULT_INLINE_MAX_BYTES = 5 * 2**20
Status = DatasetValidation.Status


def upload_max_bytes() -> int:
    """The web upload's size cap (setting DATASET_UPLOAD_MAX_BYTES); the command has none."""
    return int(getattr(settings, "DATASET_UPLOAD_MAX_BYTES", DEFAULT_UPLOAD_MAX_BYTES))


def validates_inline(validation: DatasetValidation) -> bool:
    """Small files are validated during the request (setting DATASET_INLINE_MAX_BYTES), the rest by Celery."""
    return validation.size < int(getattr(settings, "DATASET_INLINE_MAX_BYTES", DEFAULT_INLINE_MAX_BYTES))


def upload_dir() -> Path:
    """Where uploads wait for their validation; the web and worker processes must both see it."""
    return Path(getattr(settings, "DATASET_UPLOAD_DIR", Path(settings.VAR_DIR) / "uploads" / "datasets"))


def store_upload(upload: UploadedFile, *, user: Any, purpose: str, model_id: str) -> DatasetValidation:
    """Save the upload under upload_dir() and record a queued validation of it."""
    folder = upload_dir()
    folder.mkdir(parents=True, exist_ok=True)
    # Our own name on disk: the user's file name is kept in the row, and its extension is what the
    # validator reads, so nothing the user typed reaches the file system.
    path = folder / f"{uuid.uuid4().hex}.upload"
    with path.open("wb") as out:
        for chunk in upload.chunks():
            out.write(chunk)
    return DatasetValidation.objects.create(
        filename=Path(upload.name or "upload").name,
        file_path=str(path),
        size=upload.size or 0,
        purpose=purpose,
        model_id=model_id,
        context_length=context_length_for(model_id),
        created_by=user if getattr(user, "is_authenticated", False) else None,
    )


def run_validation(validation_id: int) -> None:
    """Claim a queued validation, validate its file with progress, record the verdict, delete the file."""
    # A conditional UPDATE: a duplicate delivery of the task finds the row claimed and does nothing.
    if not DatasetValidation.objects.filter(id=validation_id, status=Status.QUEUED).update(
        status=Status.RUNNING
    ):
        return
    validation = DatasetValidation.objects.get(id=validation_id)
    try:
        report = validate_dataset(
            validation.file_path,
            purpose=validation.purpose,
            filename=validation.filename,
            context_length=validation.context_length,
            progress=_progress_writer(validation),
        )
    except Exception as exc:  # kept on the row, where the person who uploaded will look
        log.exception("Dataset validation %s failed", validation_id)
        _finish(validation_id, status=Status.FAILED, failure=f"{type(exc).__name__}: {exc}")
    else:
        _finish(
            validation_id,
            status=Status.DONE,
            result=report.to_json(),
            error_count=report.error_count,
            warning_count=report.warning_count,
        )
    finally:
        Path(validation.file_path).unlink(missing_ok=True)


def _progress_writer(validation: DatasetValidation) -> Callable[[int], None]:
    """A progress callback that writes the percentage read, once per percent at most."""
    written = 0

    def write(bytes_read: int) -> None:
        nonlocal written
        percent = min(99, bytes_read * 100 // max(validation.size, 1))  # 100 means recorded, not read
        if percent > written:
            DatasetValidation.objects.filter(id=validation.id, status=Status.RUNNING).update(progress=percent)
            written = percent

    return write


def _finish(validation_id: int, **fields: Any) -> None:
    """Record the outcome of a running validation."""
    DatasetValidation.objects.filter(id=validation_id, status=Status.RUNNING).update(
        progress=100, finished_at=timezone.now(), file_path="", **fields
    )
