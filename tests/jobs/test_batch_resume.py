"""Batch resume end to end: a batch stopped by a 402, its remainder from the batch page and the command."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from io import StringIO
from pathlib import Path

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from together_dash.core.roles import VIEWER_GROUP
from together_dash.demo.jobs import batch_lines, start_batch
from together_dash.jobs.batches import poll_batches
from together_dash.jobs.models import BatchJob
from together_dash.pollers.testing import add_key
from together_dash.simulator.testing import RunningSimulator
from together_dash.together.client import TogetherClient

pytestmark = pytest.mark.django_db


@pytest.fixture
def stopped_batch(simulator: RunningSimulator, settings: object) -> Iterator[tuple[str, list[dict]]]:
    """A 10-request batch whose account ran out of credits after 4 requests, polled to the end."""
    simulator.reset()
    settings.TOGETHER_BASE_URL = simulator.base_url
    _, secret = add_key("main")
    simulator.freeze_clock()
    lines = batch_lines(10)
    with TogetherClient(secret, base_url=simulator.base_url) as client:
        started = start_batch(client, lines)
    simulator.set_credits(4)
    simulator.advance(30)
    poll_batches()
    yield started.id, lines
    simulator.reset()


@pytest.fixture
def viewer_web(db: None) -> Client:
    user = User.objects.create_user(username="vic")
    user.groups.add(Group.objects.get_or_create(name=VIEWER_GROUP)[0])
    client = Client()
    client.force_login(user)
    return client


def _download_link(page: str, batch_id: str) -> str:
    links = re.findall(r'href="([^"]+)"[^>]*>Download remainder<', page)
    assert links, "the batch page offers no remainder download"
    assert all(batch_id in link for link in links)
    return links[0]


def test_the_batch_page_offers_the_remainder_of_a_batch_stopped_by_402(
    stopped_batch: tuple[str, list[dict]], viewer_web: Client
) -> None:
    batch_id, lines = stopped_batch
    assert BatchJob.objects.get(batch_id=batch_id).stopped_for_credits
    page = viewer_web.get(reverse("dashboard-batches")).content.decode()
    assert "out of credits" in page and "6 requests" in page
    response = viewer_web.get(_download_link(page, batch_id))
    assert response.status_code == 200
    body = b"".join(response.streaming_content).decode()
    # Exactly the requests that got no output, as uploaded, ready to resubmit.
    assert body.splitlines() == [json.dumps(line) for line in lines[4:]]
    assert "attachment" in response["Content-Disposition"]


def test_the_command_writes_the_same_remainder_as_the_button(
    stopped_batch: tuple[str, list[dict]], viewer_web: Client, tmp_path: Path
) -> None:
    batch_id, _ = stopped_batch
    page = viewer_web.get(reverse("dashboard-batches")).content.decode()
    downloaded = b"".join(viewer_web.get(_download_link(page, batch_id)).streaming_content).decode()
    target = tmp_path / "remainder.jsonl"
    call_command("batch_remainder", batch_id, "-o", str(target), stderr=StringIO())
    assert target.read_text() == downloaded
    assert [json.loads(line)["custom_id"] for line in downloaded.splitlines()] == [
        f"r{i}" for i in range(4, 10)
    ]


def test_the_remainder_needs_a_dashboard_login(
    stopped_batch: tuple[str, list[dict]], viewer_web: Client
) -> None:
    batch_id, _ = stopped_batch
    page = viewer_web.get(reverse("dashboard-batches")).content.decode()
    response = Client().get(_download_link(page, batch_id))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
