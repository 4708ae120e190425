"""The dataset validator's pages, the Celery task behind large uploads, and the progress endpoint."""
from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection, connections
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext

from together_dash.datasets.models import DatasetValidation
from together_dash.datasets.tasks import validate_dataset_upload

pytestmark = pytest.mark.django_db

CHAT = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}


def jsonl(*samples: Any) -> bytes:
    return b"".join((s if isinstance(s, bytes) else json.dumps(s).encode()) + b"\n" for s in samples)


@pytest.fixture(autouse=True)
def upload_dir(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "uploads"
    with override_settings(DATASET_UPLOAD_DIR=folder):
        yield folder


def upload(client: Client, content: bytes, name: str = "train.jsonl", **fields: str) -> Any:
    return client.post("/datasets/", {"file": SimpleUploadedFile(name, content), **fields})


def queued(upload_dir: Path, content: bytes, name: str = "train.jsonl", **fields: Any) -> DatasetValidation:
    upload_dir.mkdir(parents=True, exist_ok=True)
    path = upload_dir / "waiting.upload"
    path.write_bytes(content)
    return DatasetValidation.objects.create(filename=name, file_path=str(path), size=len(content), **fields)


def test_the_validator_pages_need_a_login(client: Client) -> None:
    validation = DatasetValidation.objects.create(filename="a.jsonl", size=1)
    for url in (
        "/datasets/",
        f"/datasets/{validation.id}/",
        f"/datasets/{validation.id}/progress.json",
    ):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/accounts/login/")


def test_a_user_without_a_dashboard_role_is_refused(client: Client) -> None:
    client.force_login(User.objects.create_user("nobody"))
    assert client.get("/datasets/").status_code == 403


def test_the_page_shows_the_form_and_the_catalog_models(admin_client: Client) -> None:
    from together_dash.catalog.models import ModelInfo

    ModelInfo.objects.create(model_id="meta-llama/Tiny", context_length=10)
    page = admin_client.get("/datasets/").content.decode()
    assert 'enctype="multipart/form-data"' in page
    assert '<option value="meta-llama/Tiny">' in page
    assert "No dataset validated yet." in page


def test_a_small_valid_upload_is_validated_inline(admin_client: Client, upload_dir: Path) -> None:
    response = upload(admin_client, jsonl(CHAT, CHAT))
    validation = DatasetValidation.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/datasets/{validation.id}/"
    assert (validation.status, validation.progress, validation.ok, validation.error_count) == (
        "done",
        100,
        True,
        0,
    )
    assert validation.created_by.username == "admin"
    assert list(upload_dir.iterdir()) == []  # the upload is deleted once validated
    page = admin_client.get(response["Location"]).content.decode()
    assert "Together would accept this file" in page
    assert "datasets.js" not in page


def test_a_small_invalid_upload_shows_every_error_with_its_line(admin_client: Client) -> None:
    response = upload(admin_client, jsonl(CHAT, [], CHAT, {"messages": []}))
    page = admin_client.get(response["Location"]).content.decode()
    assert "2 errors: Together would refuse this file" in page
    assert "<td>2</td><td>must be a JSON object, found a list</td>" in page
    assert "<td>4</td><td>messages: is empty</td>" in page
    assert DatasetValidation.objects.get().result["samples"] == 4


def test_the_recent_list_shows_the_verdict(admin_client: Client) -> None:
    upload(admin_client, jsonl([]), name="broken.jsonl")
    page = admin_client.get("/datasets/").content.decode()
    assert "broken.jsonl" in page
    assert '<span class="badge verdict-bad">refused</span>' in page


def test_the_chosen_model_adds_length_warnings(admin_client: Client) -> None:
    from together_dash.catalog.models import ModelInfo

    ModelInfo.objects.create(model_id="meta-llama/Tiny", context_length=5)
    long_chat = {"messages": [{"role": "user", "content": "x" * 60}, {"role": "assistant", "content": "ok"}]}
    response = upload(admin_client, jsonl(CHAT, long_chat), model="meta-llama/Tiny")
    validation = DatasetValidation.objects.get()
    assert (validation.context_length, validation.ok, validation.warning_count) == (5, True, 1)
    page = admin_client.get(response["Location"]).content.decode()
    assert "<td>2</td><td>about 21 tokens, over the model&#x27;s context length of 5</td>" in page


@override_settings(DATASET_UPLOAD_MAX_BYTES=100)
def test_an_upload_over_the_cap_is_refused_with_the_command_to_use(admin_client: Client) -> None:
    response = upload(admin_client, jsonl(*[CHAT] * 5))
    assert response.status_code == 200
    assert "uploads here take at most 100" in response.content.decode()
    assert "validate_dataset FILE" in response.content.decode()
    assert not DatasetValidation.objects.exists()


# Eager: the task runs in-process when it is sent, as a worker would run it.
@override_settings(DATASET_INLINE_MAX_BYTES=100, CELERY_TASK_ALWAYS_EAGER=True)
def test_a_large_upload_goes_to_the_worker_after_commit(
    admin_client: Client, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = upload(admin_client, jsonl(*[CHAT] * 10, []))
    validation = DatasetValidation.objects.get()
    assert validation.status == "queued"
    assert "datasets.js" in admin_client.get(response["Location"]).content.decode()
    assert len(callbacks) == 1
    callbacks[0]()  # the commit: the eager task runs, as the worker would
    validation.refresh_from_db()
    assert (validation.status, validation.ok, validation.result["errors"]) == (
        "done",
        False,
        [{"line": 11, "message": "must be a JSON object, found a list"}],
    )


def test_the_task_writes_progress_as_it_reads(upload_dir: Path) -> None:
    content = jsonl(*[{"text": "x" * 1000}] * 4000)  # about 4 MB: a progress callback per MiB
    validation = queued(upload_dir, content)
    with CaptureQueriesContext(connection) as queries:
        validate_dataset_upload(validation.id)
    progress_writes = [q["sql"] for q in queries if '"progress" =' in q["sql"] and '"result"' not in q["sql"]]
    assert len(progress_writes) >= 3
    validation.refresh_from_db()
    assert (validation.status, validation.progress, validation.ok, validation.file_path) == (
        "done",
        100,
        True,
        "",
    )
    assert validation.finished_at is not None
    assert list(upload_dir.iterdir()) == []


def test_a_duplicate_delivery_of_the_task_changes_nothing(upload_dir: Path) -> None:
    validation = queued(upload_dir, jsonl(CHAT))
    DatasetValidation.objects.filter(id=validation.id).update(status="running", progress=40)
    validate_dataset_upload(validation.id)
    validation.refresh_from_db()
    assert (validation.status, validation.progress, validation.result) == ("running", 40, None)
    assert Path(validation.file_path).exists()


def test_a_validation_that_cannot_run_is_marked_failed(upload_dir: Path) -> None:
    validation = queued(upload_dir, jsonl(CHAT), purpose="batch-api")
    validate_dataset_upload(validation.id)
    validation.refresh_from_db()
    assert validation.status == "failed"
    assert validation.failure.startswith("ValueError: purpose must be one of")


def test_the_progress_endpoint_reports_a_running_validation(admin_client: Client) -> None:
    validation = DatasetValidation.objects.create(
        filename="big.jsonl", size=10**9, status="running", progress=40
    )
    response = admin_client.get(f"/datasets/{validation.id}/progress.json")
    assert response.json() == {
        "status": "running",
        "progress": 40,
        "finished": False,
        "ok": None,
        "samples": None,
        "errors": None,
        "warnings": None,
    }
    assert "no-cache" in response["Cache-Control"]
    page = admin_client.get(f"/datasets/{validation.id}/").content.decode()
    assert '<progress max="100" value="40"' in page
    assert f'data-url="/datasets/{validation.id}/progress.json"' in page


def test_the_progress_endpoint_reports_the_verdict_when_done(admin_client: Client, upload_dir: Path) -> None:
    validation = queued(upload_dir, jsonl(CHAT, []))
    validate_dataset_upload(validation.id)
    assert admin_client.get(f"/datasets/{validation.id}/progress.json").json() == {
        "status": "done",
        "progress": 100,
        "finished": True,
        "ok": False,
        "samples": 2,
        "errors": 1,
        "warnings": 0,
    }


def as_the_worker(validation_id: int, **fields: Any) -> None:
    """Update a validation from another thread and connection, as the Celery worker would."""

    def write() -> None:
        try:
            DatasetValidation.objects.filter(id=validation_id).update(**fields)
        finally:
            connections.close_all()

    # Not from this thread: while Playwright's event loop runs here, Django refuses ORM calls.
    thread = threading.Thread(target=write)
    thread.start()
    thread.join()


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_detail_page_follows_the_worker_and_shows_the_result(live_server: Any, admin_user: User) -> None:
    from playwright.sync_api import expect, sync_playwright

    validation = DatasetValidation.objects.create(
        filename="big.jsonl", size=10**9, status="running", progress=40
    )
    client = Client()
    client.force_login(admin_user)
    errors = [{"line": 2, "message": "must be a JSON object, found a list"}]
    result = {"ok": False, "format": "text", "samples": 3, "errors": errors, "warnings": []}
    done = {"status": "done", "progress": 100, "result": result, "error_count": 1, "warning_count": 0}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium")
        context = browser.new_context()
        session = {"name": "sessionid", "value": client.cookies["sessionid"].value, "url": live_server.url}
        context.add_cookies([session])
        page = context.new_page()
        page.goto(f"{live_server.url}/datasets/{validation.id}/")
        expect(page.locator("progress")).to_have_attribute("value", "40")
        as_the_worker(validation.id, progress=70)
        expect(page.locator(".progress-label")).to_have_text("70%", timeout=5000)
        as_the_worker(validation.id, **done)
        expect(page.get_by_text("1 error: Together would refuse this file")).to_be_visible(timeout=5000)
        expect(page.locator("table.issues td").first).to_have_text("2")
        browser.close()


def test_a_post_without_a_file_asks_for_one(admin_client: Client) -> None:
    response = admin_client.post("/datasets/", {})
    assert response.status_code == 200
    assert "This field is required." in response.content.decode()
    assert not DatasetValidation.objects.exists()
