"""Dedicated endpoints and hardware: the document's /v1 shapes and together 3.x's /v2 project view."""

from __future__ import annotations

import httpx
import pytest
import together

from together_dash.simulator import catalog, endpoints
from together_dash.simulator.testing import RunningSimulator

from .conftest import PROJECT_ID

MODEL = catalog.SMALL_CHAT_MODEL
A100 = "1x_nvidia_a100_80gb_sxm"
BOOT_S = endpoints.PENDING_S + endpoints.STARTING_S


@pytest.fixture
def frozen(sim: RunningSimulator) -> RunningSimulator:
    sim.freeze_clock()
    return sim


def create(root_http: httpx.Client, **fields: object) -> dict:
    body = {"model": MODEL, "hardware": A100, "autoscaling": {"min_replicas": 1, "max_replicas": 2}, **fields}
    answer = root_http.post("/v1/endpoints", json=body)
    assert answer.status_code == 200, answer.text
    return answer.json()


def state_of(root_http: httpx.Client, endpoint_id: str) -> str:
    return root_http.get(f"/v1/endpoints/{endpoint_id}").json()["state"]


def test_a_new_endpoint_starts_by_itself(frozen: RunningSimulator, root_http: httpx.Client) -> None:
    created = create(root_http, display_name="Mine")
    seen = [created["state"]]
    for seconds in (endpoints.PENDING_S, endpoints.STARTING_S):
        frozen.advance(seconds)
        seen.append(state_of(root_http, created["id"]))

    assert seen == ["PENDING", "STARTING", "STARTED"]
    assert created["id"].startswith("endpoint-")
    assert created["object"] == "endpoint"
    assert created["type"] == "dedicated"
    assert created["display_name"] == "Mine"
    assert created["name"].startswith("simulated-org/")
    assert created["autoscaling"] == {"min_replicas": 1, "max_replicas": 2}


def test_patch_stops_and_starts_it(frozen: RunningSimulator, root_http: httpx.Client) -> None:
    endpoint_id = create(root_http)["id"]
    frozen.advance(BOOT_S)

    stopping = root_http.patch(f"/v1/endpoints/{endpoint_id}", json={"state": "STOPPED"}).json()["state"]
    frozen.advance(endpoints.STOPPING_S)
    stopped = state_of(root_http, endpoint_id)
    starting = root_http.patch(f"/v1/endpoints/{endpoint_id}", json={"state": "STARTED"}).json()["state"]

    assert (stopping, stopped, starting) == ("STOPPING", "STOPPED", "PENDING")
    assert root_http.patch(f"/v1/endpoints/{endpoint_id}", json={"state": "ASLEEP"}).status_code == 400


def test_inactive_timeout_stops_an_idle_endpoint(frozen: RunningSimulator, root_http: httpx.Client) -> None:
    created = create(root_http, inactive_timeout=5)
    frozen.advance(BOOT_S + 4 * 60)
    chat = {"model": created["name"], "messages": [{"role": "user", "content": "hi"}]}
    served = root_http.post("/v1/chat/completions", json=chat)
    frozen.advance(4 * 60)
    still = state_of(root_http, created["id"])
    frozen.advance(60 + endpoints.STOPPING_S)

    assert served.status_code == 200
    assert still == "STARTED"  # the request reset the idle clock
    assert state_of(root_http, created["id"]) == "STOPPED"
    refused = root_http.post("/v1/chat/completions", json=chat)
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "model_not_available"


def test_unavailable_hardware_ends_in_error(frozen: RunningSimulator, root_http: httpx.Client) -> None:
    endpoint_id = create(root_http, hardware="8x_nvidia_h200_141gb_sxm")["id"]
    frozen.advance(endpoints.PENDING_S)

    assert state_of(root_http, endpoint_id) == "ERROR"


def test_create_refuses_what_cannot_run(root_http: httpx.Client) -> None:
    base = {"model": MODEL, "hardware": A100, "autoscaling": {"min_replicas": 1, "max_replicas": 1}}

    assert root_http.post("/v1/endpoints", json={**base, "hardware": "1x_abacus"}).status_code == 400
    assert root_http.post("/v1/endpoints", json={**base, "model": "nobody/nothing"}).status_code == 404
    big = {**base, "model": "meta-llama/Meta-Llama-3.1-405B-Instruct-Turbo"}
    assert root_http.post("/v1/endpoints", json=big).status_code == 400
    assert (
        root_http.post("/v1/endpoints", json={**base, "autoscaling": {"min_replicas": 0}}).status_code == 400
    )


def test_list_filters_by_type_and_delete_is_204(root_http: httpx.Client) -> None:
    endpoint_id = create(root_http)["id"]

    mine = root_http.get("/v1/endpoints", params={"type": "dedicated"}).json()
    serverless = root_http.get("/v1/endpoints", params={"type": "serverless"}).json()
    deleted = root_http.delete(f"/v1/endpoints/{endpoint_id}")

    assert mine["object"] == "list"
    assert [e["id"] for e in mine["data"]] == [endpoint_id]
    assert {e["owner"] for e in serverless["data"]} == {"together"}
    assert all(e["state"] == "STARTED" for e in serverless["data"])
    assert (deleted.status_code, deleted.content) == (204, b"")
    assert root_http.get(f"/v1/endpoints/{endpoint_id}").status_code == 404


def test_hardware_lists_per_minute_prices_and_availability_for_a_model(root_http: httpx.Client) -> None:
    every = root_http.get("/v1/hardware").json()["data"]
    for_model = root_http.get("/v1/hardware", params={"model": catalog.DEFAULT_CHAT_MODEL}).json()["data"]

    a100 = next(hw for hw in every if hw["id"] == A100)
    assert a100["object"] == "hardware"
    assert a100["pricing"] == {"cents_per_minute": 4.27}
    assert a100["specs"] == {"gpu_type": "a100-80gb", "gpu_link": "sxm", "gpu_memory": 80, "gpu_count": 1}
    assert "availability" not in a100
    assert A100 not in {hw["id"] for hw in for_model}  # 70B in 16-bit needs more than 80 GB
    assert {hw["availability"]["status"] for hw in for_model} <= {"available", "unavailable", "insufficient"}
    assert "unavailable" in {hw["availability"]["status"] for hw in for_model}


def test_sdk_hardware_list_reads_the_instance_types(together_client: together.Together) -> None:
    listed = together_client.endpoints.hardware.list()

    a100 = next(hw for hw in listed.data if hw.id == A100)
    assert a100.price_cents_per_hour == 256  # 4.27 cents a minute
    assert a100.gpu_count == 1
    assert a100.regions[0].name


def test_sdk_lists_retrieves_updates_and_deletes(
    frozen: RunningSimulator, root_http: httpx.Client, together_client: together.Together
) -> None:
    endpoint_id = create(root_http)["id"]
    frozen.advance(BOOT_S)

    listed = list(together_client.endpoints.list())
    got = together_client.endpoints.retrieve(endpoint_id)
    renamed = together_client.endpoints.update(endpoint_id, name="my-llama", etag=got.etag)
    together_client.endpoints.delete(endpoint_id)

    assert [e.id for e in listed] == [endpoint_id]
    assert got.project_id == PROJECT_ID
    assert got.endpoint_type == "ENDPOINT_TYPE_DEDICATED"
    assert got.deployments[0].state == "DEPLOYMENT_STATE_READY"
    assert got.deployments[0].hardware == A100
    assert renamed.name == "simulated-org/my-llama"
    assert renamed.etag != got.etag
    assert root_http.get(f"/v1/endpoints/{endpoint_id}").status_code == 404


def test_sdk_update_with_a_stale_etag_conflicts(
    root_http: httpx.Client, together_client: together.Together
) -> None:
    endpoint_id = create(root_http)["id"]
    together_client.endpoints.update(endpoint_id, visibility="VISIBILITY_INTERNAL")

    with pytest.raises(together.ConflictError):
        together_client.endpoints.update(endpoint_id, name="late", etag="1")


def test_sdk_another_projects_endpoints_are_forbidden(together_client: together.Together) -> None:
    with pytest.raises(together.PermissionDeniedError):
        list(together_client.endpoints.list(project_id="proj_someone_else"))
    with pytest.raises(together.NotFoundError):
        together_client.endpoints.retrieve("endpoint-missing")
