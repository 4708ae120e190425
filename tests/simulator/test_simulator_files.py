"""Files: the together SDK's own upload flow, direct multipart uploads, listing, content and delete."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import together

SAMPLES = [
    {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
    for i in range(5)
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_together_sdk_upload_uses_the_redirect_flow(
    tmp_path: Path, together_client: together.Together
) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", SAMPLES)

    uploaded = together_client.files.upload(path)
    listed = together_client.files.list()
    content = together_client.files.content(uploaded.id).read()

    assert uploaded.id.startswith("file-")
    assert uploaded.filename == "train.jsonl"
    assert uploaded.bytes == path.stat().st_size
    assert uploaded.purpose == "fine-tune"
    # 3.x FileResponse has no `processed` field; the body still carries the documented `Processed`.
    assert together_client.files.retrieve(uploaded.id).to_dict()["Processed"] is True
    assert [f.id for f in listed.data] == [uploaded.id]
    assert content == path.read_bytes()


def test_uploading_the_same_bytes_again_returns_the_existing_file(
    tmp_path: Path, together_client: together.Together
) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", SAMPLES)

    first = together_client.files.upload(path)
    second = together_client.files.upload(path)

    assert second.id == first.id
    assert len(together_client.files.list().data) == 1


def test_redirect_flow_step_by_step(http: httpx.Client) -> None:
    form = {"purpose": "fine-tune", "file_name": "data.jsonl", "file_type": "jsonl"}

    redirect = http.post("/files", data=form, follow_redirects=False)
    file_id = redirect.headers["x-together-file-id"]
    pending = http.get(f"/files/{file_id}").json()
    put = httpx.put(redirect.headers["location"], content=b'{"text": "a"}\n{"text": "b"}\n')  # no auth header
    done = http.post(f"/files/{file_id}/preprocess").json()

    assert redirect.status_code == 302
    assert pending["Processed"] is False
    assert put.status_code == 200
    assert done == {
        **done,
        "id": file_id,
        "object": "file",
        "bytes": 28,
        "FileType": "jsonl",
        "Processed": True,
        "LineCount": 2,
        "purpose": "fine-tune",
        "filename": "data.jsonl",
    }
    assert isinstance(done["created_at"], int)


def test_the_upload_url_needs_its_token(http: httpx.Client) -> None:
    redirect = http.post(
        "/files", data={"purpose": "fine-tune", "file_name": "x.jsonl"}, follow_redirects=False
    )
    tampered = redirect.headers["location"].split("?")[0] + "?token=wrong"

    assert httpx.put(tampered, content=b"{}").status_code == 403


def test_direct_multipart_uploads(http: httpx.Client) -> None:
    upload = http.post(
        "/files/upload",
        data={"purpose": "batch-api", "file_name": "in.jsonl", "file_type": "jsonl"},
        files={"file": ("in.jsonl", b'{"custom_id": "1"}\n')},
    )
    curl_style = http.post(
        "/files", data={"purpose": "fine-tune"}, files={"file": ("train.jsonl", b'{"text": "x"}')}
    )

    assert upload.status_code == 200
    assert upload.json()["purpose"] == "batch-api"
    assert upload.json()["Processed"] is True
    assert curl_style.json()["filename"] == "train.jsonl"
    assert curl_style.json()["LineCount"] == 1


def test_invalid_purpose_is_400(http: httpx.Client) -> None:
    response = http.post(
        "/files/upload",
        data={"purpose": "training", "file_name": "x.jsonl"},
        files={"file": ("x.jsonl", b"{}")},
    )

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "purpose"


def test_delete_then_not_found(together_client: together.Together, tmp_path: Path) -> None:
    uploaded = together_client.files.upload(write_jsonl(tmp_path / "t.jsonl", SAMPLES))

    deleted = together_client.files.delete(uploaded.id)

    assert deleted.deleted is True
    with pytest.raises(together.NotFoundError, match=uploaded.id):
        together_client.files.retrieve(uploaded.id)
