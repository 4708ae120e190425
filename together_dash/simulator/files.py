"""Files: direct multipart uploads, the SDK's 302 + PUT + preprocess flow, listing, content, delete.

The together SDK 2.x upload (lib/resources/files.py UploadManager) posts a multipart form with purpose,
file_name, file_type and checksum but no file to POST /files, expects a 302 with `Location` and
`X-Together-File-Id`, PUTs the raw bytes to that Location without auth (a presigned URL in real
life; here a tokenised URL on the simulator itself), then calls POST /files/{id}/preprocess. A 409
whose JSON carries `file_id` means "already uploaded" and makes the SDK return the existing file.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from together_dash.simulator import errors
from together_dash.simulator.wire import Request, Response, json_response

if TYPE_CHECKING:
    from together_dash.simulator.state import SimulatorState

PURPOSES = frozenset(
    {
        "fine-tune",
        "eval",
        "eval-sample",
        "eval-output",
        "eval-summary",
        "batch-generated",
        "batch-api",
    }
)
FILE_TYPES = frozenset({"jsonl", "parquet", "csv"})


@dataclass(slots=True)
class StoredFile:
    id: str
    filename: str
    purpose: str
    file_type: str
    created_at: int
    data: bytes = b""
    processed: bool = False
    checksum: str = ""
    upload_token: str = ""

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "object": "file",
            "created_at": self.created_at,
            "filename": self.filename,
            "bytes": len(self.data),
            "purpose": self.purpose,
            "FileType": self.file_type,
            "Processed": self.processed,
            "LineCount": line_count(self.data) if self.processed else 0,
            "processing_status": "COMPLETED" if self.processed else "PENDING",
        }


def line_count(data: bytes) -> int:
    if not data:
        return 0
    return data.count(b"\n") + (0 if data.endswith(b"\n") else 1)


class FileStore:
    def __init__(self) -> None:
        self.files: dict[str, StoredFile] = {}

    def add(
        self,
        filename: str,
        purpose: str,
        data: bytes,
        file_type: str = "jsonl",
        processed: bool = True,
        created_at: float | None = None,
    ) -> StoredFile:
        """Store a complete file (uploads, batch outputs)."""
        stored = StoredFile(
            id=f"file-{uuid.uuid4()}",
            filename=filename,
            purpose=purpose,
            file_type=file_type,
            created_at=int(created_at if created_at is not None else time.time()),
            data=data,
            processed=processed,
            checksum=hashlib.sha256(data).hexdigest(),
        )
        self.files[stored.id] = stored
        return stored

    def get(self, file_id: str) -> StoredFile | None:
        return self.files.get(file_id)

    def find_duplicate(self, checksum: str, purpose: str) -> StoredFile | None:
        for stored in self.files.values():
            if stored.processed and stored.checksum == checksum and stored.purpose == purpose:
                return stored
        return None


def parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """A small multipart/form-data parser: field name -> (filename or None, content)."""
    boundary = ""
    for param in content_type.split(";")[1:]:
        name, _, value = param.strip().partition("=")
        if name.lower() == "boundary":
            boundary = value.strip('"')
    if not boundary:
        raise ValueError("multipart body without a boundary")
    delimiter = b"--" + boundary.encode()
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in body.split(delimiter)[1:]:
        if part.startswith(b"--"):
            break
        head, _, content = part.partition(b"\r\n\r\n")
        if content.endswith(b"\r\n"):
            content = content[:-2]
        name, filename = _disposition(head.decode("utf-8", "replace"))
        if name:
            fields[name] = (filename, content)
    return fields


def _disposition(head: str) -> tuple[str, str | None]:
    name, filename = "", None
    for line in head.split("\r\n"):
        if line.lower().startswith("content-disposition:"):
            for param in line.split(";")[1:]:
                key, _, value = param.strip().partition("=")
                if key == "name":
                    name = value.strip('"')
                elif key == "filename":
                    filename = value.strip('"')
    return name, filename


def _form(request: Request) -> dict[str, tuple[str | None, bytes]]:
    """Form fields from multipart, urlencoded or the query string (the TS SDK uses the query string)."""
    fields: dict[str, tuple[str | None, bytes]] = {k: (None, v.encode()) for k, v in request.query().items()}
    content_type = request.header(b"content-type")
    if content_type.startswith("multipart/form-data"):
        fields.update(parse_multipart(content_type, request.body))
    elif content_type.startswith("application/x-www-form-urlencoded") and request.body:
        for key, values in parse_qs(request.body.decode("utf-8", "replace")).items():
            fields[key] = (None, values[-1].encode())
    return fields


def _text(fields: dict[str, tuple[str | None, bytes]], name: str, default: str = "") -> str:
    value = fields.get(name)
    return value[1].decode("utf-8", "replace") if value is not None else default


def _bad(message: str, param: str | None = None) -> Response:
    return Response(400, errors.invalid_request(message, param=param))


async def upload(state: SimulatorState, request: Request) -> Response:
    """POST /files and POST /files/upload."""
    try:
        fields = _form(request)
    except ValueError as exc:
        return _bad(str(exc))
    purpose = _text(fields, "purpose", "fine-tune")
    if purpose not in PURPOSES:
        return _bad(f"Invalid purpose '{purpose}'. Must be one of: {', '.join(sorted(PURPOSES))}", "purpose")
    file_type = _text(fields, "file_type", "jsonl") or "jsonl"
    if file_type not in FILE_TYPES:
        return _bad(f"Invalid file_type '{file_type}'. Must be one of: jsonl, parquet, csv", "file_type")
    part = fields.get("file")
    filename = _text(fields, "file_name") or (part[0] if part and part[0] else "")
    if part is not None:
        if not filename:
            return _bad("file_name is required", "file_name")
        stored = state.files.add(filename, purpose, part[1], file_type, created_at=state.clock.now())
        return json_response(stored.to_json())
    if request.path.endswith("/upload"):
        return _bad("A file part named 'file' is required", "file")
    return _redirect_for_put(state, request, filename, purpose, file_type, _text(fields, "checksum"))


def _redirect_for_put(
    state: SimulatorState, request: Request, filename: str, purpose: str, file_type: str, checksum: str
) -> Response:
    if not filename:
        return _bad("file_name is required", "file_name")
    if checksum:
        duplicate = state.files.find_duplicate(checksum, purpose)
        if duplicate is not None:
            return json_response({"message": "File already exists", "file_id": duplicate.id}, status=409)
    stored = state.files.add(filename, purpose, b"", file_type, processed=False, created_at=state.clock.now())
    stored.upload_token = secrets.token_urlsafe(16)
    location = f"http://{request.host}/_sim/uploads/{stored.id}?token={stored.upload_token}"
    headers = [(b"location", location.encode()), (b"x-together-file-id", stored.id.encode())]
    return Response(302, b"", b"text/plain; charset=utf-8", headers)


async def put_upload(state: SimulatorState, request: Request) -> Response:
    """PUT /_sim/uploads/{id}?token=...: the stand-in for a presigned storage URL."""
    stored = state.files.get(request.params[0])
    if stored is None or not secrets.compare_digest(request.query().get("token", ""), stored.upload_token):
        return Response(403, b"<Error><Code>AccessDenied</Code></Error>", b"application/xml")
    stored.data = request.body
    stored.checksum = hashlib.sha256(request.body).hexdigest()
    return Response(200, b"", b"text/plain; charset=utf-8")


def _missing(file_id: str) -> Response:
    return Response(404, errors.not_found(f"File with id {file_id} not found"))


async def preprocess(state: SimulatorState, request: Request) -> Response:
    stored = state.files.get(request.params[0])
    if stored is None:
        return _missing(request.params[0])
    stored.processed = True
    stored.upload_token = ""
    return json_response(stored.to_json())


async def list_files(state: SimulatorState, request: Request) -> Response:
    return json_response({"object": "list", "data": [f.to_json() for f in state.files.files.values()]})


async def retrieve(state: SimulatorState, request: Request) -> Response:
    stored = state.files.get(request.params[0])
    return json_response(stored.to_json()) if stored is not None else _missing(request.params[0])


async def content(state: SimulatorState, request: Request) -> Response:
    stored = state.files.get(request.params[0])
    if stored is None:
        return _missing(request.params[0])
    kind = b"text/plain; charset=utf-8" if stored.file_type != "parquet" else b"application/octet-stream"
    return Response(200, stored.data, kind)


async def delete(state: SimulatorState, request: Request) -> Response:
    stored = state.files.files.pop(request.params[0], None)
    if stored is None:
        return _missing(request.params[0])
    return json_response({"id": stored.id, "object": "file", "deleted": True})
