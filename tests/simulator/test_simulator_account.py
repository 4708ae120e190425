"""Who the key is and what it can use, as together 3.x asks: /v3/whoami, supported models, project models."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import together

from together_dash.simulator import catalog
from together_dash.simulator.testing import RunningSimulator

from .conftest import API_KEY, PROJECT_ID


def client_for(sim: RunningSimulator, key: str) -> together.Together:
    return together.Together(base_url=sim.root_url, api_key=key, project_id=PROJECT_ID, max_retries=0)


def test_whoami_is_stable_per_key(sim: RunningSimulator, together_client: together.Together) -> None:
    first = together_client.whoami()
    again = together_client.whoami()
    other = client_for(sim, "another-key").whoami()

    assert first == again
    assert first.type == "project_api_key"
    assert first.api_key.id != other.api_key.id
    assert first.organization.id == other.organization.id
    assert first.project.id == PROJECT_ID
    assert first.project.slug


def test_an_org_key_has_no_project(sim: RunningSimulator) -> None:
    sim.set_scenario(org_keys=["org-key"])

    who = client_for(sim, "org-key").whoami()

    assert type(who).__name__ == "WhoamiOrgAPIKey"
    assert who.type == "org_api_key"
    assert who.organization.name == "Simulated Org"
    assert "project" not in who.to_dict()


def test_v1_whoami_keeps_the_flat_shape_for_older_sdks(http: httpx.Client, root_http: httpx.Client) -> None:
    flat = http.get("/whoami").json()
    tagged = root_http.get("/v3/whoami").json()

    assert flat["project_id"] == tagged["project"]["id"]
    assert flat["organization_id"] == tagged["organization"]["id"]
    assert flat["api_key_id"] == tagged["api_key"]["id"]
    assert flat["project_slug"] == tagged["project"]["slug"]


def test_list_supported_filters_by_product(together_client: together.Together) -> None:
    tunable = list(together_client.models.list_supported(product="PRODUCT_FINE_TUNING"))
    serverless = list(together_client.models.list_supported(product="PRODUCT_SERVERLESS"))

    assert {m.id for m in tunable} == set(catalog.FINETUNE_MODELS)
    assert catalog.NON_SERVERLESS_MODEL not in {m.id for m in serverless}
    llama = next(m for m in serverless if m.id == catalog.DEFAULT_CHAT_MODEL)
    assert llama.pricing.input == 0.88
    assert llama.context_length == "131072"
    assert llama.capabilities == ["CAPABILITY_CHAT"]
    assert "PRODUCT_DEDICATED" in llama.products


def test_list_supported_filters_by_modality_and_search(together_client: together.Together) -> None:
    images = list(together_client.models.list_supported(modality="MODALITY_IMAGE"))
    found = list(together_client.models.list_supported(search="qwen2.5"))

    assert images == []  # every simulated model takes text in; FLUX puts images out
    assert found and all("qwen2.5" in m.id.lower() for m in found)


def test_list_supported_pages_through_the_catalog(together_client: together.Together) -> None:
    first = together_client.models.list_supported(limit=5)
    everything = list(together_client.models.list_supported(limit=5))

    assert len(first.data) == 5
    assert first.next_cursor
    assert [m.id for m in everything] == [m.id for m in catalog.MODELS]


def test_supported_models_answer_camel_case(root_http: httpx.Client) -> None:
    page = root_http.get("/v2/supported-models", params={"limit": 1}).json()
    one = root_http.get(f"/v2/supported-models/{catalog.DEFAULT_CHAT_MODEL}").json()

    assert set(page) == {"object", "data", "next_cursor"}
    entry = page["data"][0]
    assert {"baseModel", "displayName", "inputModalities", "createdAt", "deploymentProfiles"} <= set(entry)
    assert one["id"] == catalog.DEFAULT_CHAT_MODEL
    assert root_http.get("/v2/supported-models", params={"after": "bogus!"}).status_code == 400
    assert root_http.get("/v2/supported-models", params={"limit": 0}).status_code == 400


def test_project_models_are_the_finished_fine_tunes(
    sim: RunningSimulator, tmp_path: Path, together_client: together.Together
) -> None:
    sim.freeze_clock()
    path = tmp_path / "train.jsonl"
    lines = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}] * 8
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    training_file = together_client.files.upload(path).id
    job = together_client.fine_tuning.create(training_file=training_file, model=catalog.SMALL_CHAT_MODEL)

    before = list(together_client.models.list())
    sim.advance(3600)
    after = list(together_client.models.list())

    assert before == []
    assert len(after) == 1
    assert after[0].project_id == PROJECT_ID
    assert after[0].name.endswith(job.output_name.rsplit("/", 1)[-1])
    assert after[0].visibility == "VISIBILITY_PRIVATE"


def test_another_projects_models_are_forbidden(together_client: together.Together) -> None:
    with pytest.raises(together.PermissionDeniedError):
        list(together_client.models.list(project_id="proj_someone_else"))


def test_models_list_needs_a_key(sim: RunningSimulator) -> None:
    answer = httpx.get(f"{sim.root_url}/v2/projects/{PROJECT_ID}/models")

    assert answer.status_code == 401
    assert API_KEY not in answer.text
