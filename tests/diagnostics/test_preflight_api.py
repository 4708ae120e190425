"""POST /api/preflight and the /diagnostics/preflight/ page, against a catalog polled from the simulator."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client
from django.urls import reverse

from together_dash.catalog.polling import poll_models
from together_dash.core.roles import VIEWER_GROUP
from together_dash.keys.models import ApiToken
from together_dash.pollers.testing import add_key
from together_dash.simulator.testing import RunningSimulator

pytestmark = pytest.mark.django_db

LLAMA = "meta-llama/Llama-3.3-70B-Instruct-Turbo"
GEMMA = "google/gemma-2-27b-it"
URL = "/api/preflight"


@pytest.fixture
def catalog(simulator: RunningSimulator, settings: object) -> None:
    simulator.reset()
    settings.TOGETHER_BASE_URL = simulator.base_url
    add_key("main")
    assert poll_models().ok == 1


@pytest.fixture
def ops_client(db: None) -> Client:
    token = ApiToken(name="script")
    whole = token.issue()
    token.save()
    return Client(HTTP_AUTHORIZATION=f"Bearer {whole}")


@pytest.fixture
def viewer_web(db: None) -> Client:
    user = User.objects.create_user(username="vic")
    user.groups.add(Group.objects.get_or_create(name=VIEWER_GROUP)[0])
    client = Client()
    client.force_login(user)
    return client


def test_an_ops_token_gets_the_verdict_as_json(catalog: None, ops_client: Client) -> None:
    body = {"model": LLAMA, "max_tokens": 256, "messages": [{"role": "user", "content": "Hi"}]}
    response = ops_client.post(URL, body, content_type="application/json")
    assert response.status_code == 200
    data = response.json()
    assert data["ok"] is True and data["fits"] is True and data["context_length"] == 131072
    assert data["prompt_tokens"] == 3 + 4 + 1 and data["tokenizer"].startswith("estimate")


def test_a_request_over_the_context_answers_200_with_ok_false(catalog: None, viewer_web: Client) -> None:
    body = {"model": GEMMA, "max_tokens": 9000, "prompt": "Hi"}
    data = viewer_web.post(URL, body, content_type="application/json").json()
    assert (data["ok"], data["fits"], data["model_found"]) == (False, False, True)
    assert "over the context length of 8192" in data["problems"][0]


def test_an_unknown_model_lists_close_matches(catalog: None, ops_client: Client) -> None:
    body = {"model": "Llama-3.3-70B-Instruct-Turbo", "max_tokens": 1, "prompt": "Hi"}
    data = ops_client.post(URL, body, content_type="application/json").json()
    assert data["model_found"] is False and LLAMA in data["close_matches"]


@pytest.mark.parametrize(
    "body",
    [
        {"model": LLAMA, "max_tokens": 10},  # neither prompt nor messages
        {"model": LLAMA, "max_tokens": 10, "prompt": "a", "messages": [{"role": "user", "content": "b"}]},
        {"model": LLAMA, "max_tokens": 0, "prompt": "a"},
        {"model": LLAMA, "max_tokens": "many", "prompt": "a"},
        {"model": LLAMA, "max_tokens": 5, "messages": [{"role": "user"}]},
        {"max_tokens": 5, "prompt": "a"},
    ],
)
def test_bad_input_answers_422(catalog: None, ops_client: Client, body: dict) -> None:
    response = ops_client.post(URL, body, content_type="application/json")
    assert response.status_code == 422


def test_without_a_session_or_token_it_answers_401(db: None) -> None:
    body = {"model": LLAMA, "max_tokens": 1, "prompt": "Hi"}
    assert Client().post(URL, body, content_type="application/json").status_code == 401
    bad = Client(HTTP_AUTHORIZATION="Bearer tdo_nothing_here")
    assert bad.post(URL, body, content_type="application/json").status_code == 401


def test_it_is_in_the_openapi_document(db: None) -> None:
    paths = Client().get("/api/openapi.json").json()["paths"]
    assert "post" in paths[URL]


# ---- the page ----------------------------------------------------------------------------------------


def test_the_page_shows_the_form_and_then_the_verdict(catalog: None, viewer_web: Client) -> None:
    page = viewer_web.get(reverse("diagnostics-preflight"))
    assert page.status_code == 200 and b'name="max_tokens"' in page.content
    assert LLAMA.encode() in page.content  # the catalog feeds the model suggestions
    result = viewer_web.post(
        reverse("diagnostics-preflight"), {"model": GEMMA, "max_tokens": "9000", "prompt": "Hi"}
    )
    assert result.status_code == 200
    text = result.content.decode()
    assert "will fail" in text and "over the context length of 8192" in text
    fits = viewer_web.post(
        reverse("diagnostics-preflight"),
        {"model": LLAMA, "max_tokens": "10", "messages": '[{"role": "user", "content": "Hi"}]'},
    )
    assert "fits" in fits.content.decode() and "will fail" not in fits.content.decode()


def test_the_page_explains_bad_input(catalog: None, viewer_web: Client) -> None:
    response = viewer_web.post(
        reverse("diagnostics-preflight"), {"model": LLAMA, "max_tokens": "10", "messages": "[{"}
    )
    assert response.status_code == 422 and "Not valid JSON" in response.content.decode()
    response = viewer_web.post(reverse("diagnostics-preflight"), {"model": LLAMA, "max_tokens": "10"})
    assert response.status_code == 422 and "either messages or a prompt" in response.content.decode()


def test_the_page_needs_a_login(db: None) -> None:
    response = Client().get(reverse("diagnostics-preflight"))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
