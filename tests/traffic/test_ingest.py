from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from django.db import OperationalError, connection
from django.test import Client, override_settings

from together_dash.keys.models import AppKey, TogetherKey
from together_dash.traffic.models import ErrorGroup, RequestLog, UsageMinute

pytestmark = pytest.mark.django_db

MODEL = "meta-llama/Llama-3.3-70B-Instruct-Turbo"
CREDIT_LIMIT = {
    "error": {
        "message": "Credit limit exceeded. Please navigate to https://api.together.xyz/settings/billing "
                   "to add credit or upgrade your plan.",
        "type": "credit_limit", "param": None, "code": None,
    }
}


@pytest.fixture
def upstream() -> TogetherKey:
    return TogetherKey.create("main", "tgp_" + "a" * 40)


@pytest.fixture
def app_key(upstream: TogetherKey) -> tuple[AppKey, str]:
    key = AppKey(name="batch-jobs", upstream_key=upstream)
    secret = key.issue()
    key.save()
    return key, secret


def post(client: Client, secret: str, body: object, content_type: str = "application/json"):  # noqa: ANN201
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {secret}"}
    return client.post("/api/ingest", data=data, content_type=content_type, **auth)


def record(**fields: object) -> dict[str, object]:
    return {"endpoint": "/v1/chat/completions", "model": MODEL, "status": 200, "latency_ms": 120.5,
            "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}, **fields}


def test_it_stores_records_attributed_to_the_app_key_and_its_upstream_key(
    client: Client, app_key: tuple[AppKey, str], upstream: TogetherKey
) -> None:
    key, secret = app_key
    response = post(client, secret, [record(id="r1", timestamp="2026-03-01T12:00:00Z", request_id="req-9")])

    assert response.status_code == 200
    accepted = [{"index": 0, "id": "r1", "duplicate": False}]
    assert response.json() == {"created": 1, "duplicates": 0, "accepted": accepted, "rejected": []}
    log = RequestLog.objects.get()
    assert (log.source, log.client_id) == ("ingest", "r1")
    assert (log.app_key_id, log.upstream_key_id) == (key.id, upstream.id)
    assert log.key_fingerprint == upstream.fingerprint
    assert log.created_at == datetime(2026, 3, 1, 12, tzinfo=UTC)
    assert (log.model_requested, log.status_code, log.latency_ms) == (MODEL, 200, 120.5)
    assert log.request_id == "req-9"
    assert (log.prompt_tokens, log.completion_tokens, log.total_tokens) == (12, 3, 15)


def test_error_bodies_are_classified_and_grouped(client: Client, app_key: tuple[AppKey, str]) -> None:
    _, secret = app_key
    records = [record(id=f"e{n}", status=402, error=CREDIT_LIMIT, usage=None) for n in range(3)]
    records.append(record(id="t1", status=None, error_type="timeout", usage=None))
    records.append(record(id="c1", status=None, usage=None))

    assert post(client, secret, records).status_code == 200

    billing = RequestLog.objects.filter(status_code=402)
    assert {(log.category, log.kind) for log in billing} == {("billing", "insufficient_credits")}
    assert billing.first().error_message.startswith("Credit limit exceeded.")
    timeout = RequestLog.objects.get(client_id="t1")
    assert (timeout.status_code, timeout.category, timeout.kind) == (None, "network", "timeout")
    assert RequestLog.objects.get(client_id="c1").kind == "connection_error"
    assert ErrorGroup.objects.get(kind="insufficient_credits").count == 3
    assert UsageMinute.objects.get().errors_billing == 3


def test_rate_limit_headers_are_kept(client: Client, app_key: tuple[AppKey, str]) -> None:
    _, secret = app_key
    headers = {"x-ratelimit-limit": "60", "x-ratelimit-remaining": 7, "x-ratelimit-reset": "0.5",
               "x-tokenlimit-remaining": "9000"}
    post(client, secret, [record(headers=headers)])

    log = RequestLog.objects.get()
    assert (log.ratelimit_limit, log.ratelimit_remaining, log.ratelimit_reset) == (60, 7, 0.5)
    assert log.tokenlimit_remaining == 9000


def test_json_lines_are_accepted(client: Client, app_key: tuple[AppKey, str]) -> None:
    _, secret = app_key
    lines = "\n".join(json.dumps(record(id=f"l{n}")) for n in range(3)) + "\n\n"

    response = post(client, secret, lines, content_type="application/x-ndjson")

    assert response.status_code == 200
    assert response.json()["created"] == 3
    assert RequestLog.objects.count() == 3


def test_a_bad_json_line_is_rejected_alone(client: Client, app_key: tuple[AppKey, str]) -> None:
    _, secret = app_key
    lines = json.dumps(record(id="ok")) + "\n{not json\n"

    answer = post(client, secret, lines, content_type="application/x-ndjson").json()

    assert [a["id"] for a in answer["accepted"]] == ["ok"]
    reason = {"field": "", "message": "line 2 is not valid JSON"}
    assert answer["rejected"] == [{"index": 1, "id": None, "errors": [reason]}]


def test_valid_records_are_stored_and_each_rejection_says_why(
    client: Client, app_key: tuple[AppKey, str]
) -> None:
    _, secret = app_key
    records = [
        record(id="good"),
        record(id="neg", latency_ms=-1),
        {"id": "no-endpoint", "status": 200},
        {key: value for key, value in record(id="no-status").items() if key != "status"},
        "not an object",
        record(id="future", timestamp=(datetime.now(UTC) + timedelta(days=1)).isoformat()),
        record(id="nul\u0000"),
    ]
    response = post(client, secret, records)

    assert response.status_code == 200
    answer = response.json()
    assert answer["created"] == 1 and answer["accepted"] == [{"index": 0, "id": "good", "duplicate": False}]
    reasons = {r["index"]: r for r in answer["rejected"]}
    assert sorted(reasons) == [1, 2, 3, 4, 5, 6]
    assert reasons[1]["id"] == "neg" and reasons[1]["errors"][0]["field"] == "latency_ms"
    assert reasons[2]["errors"][0]["field"] == "endpoint"
    assert reasons[3]["errors"] == [{"field": "status", "message": "Field required"}]
    assert reasons[4]["errors"] == [{"field": "", "message": "a record must be a JSON object"}]
    assert "future" in reasons[5]["errors"][0]["message"]
    assert reasons[6]["id"] is None and reasons[6]["errors"][0]["field"] == "id"
    assert list(RequestLog.objects.values_list("client_id", flat=True)) == ["good"]


def test_nothing_accepted_is_a_400_with_the_reasons(client: Client, app_key: tuple[AppKey, str]) -> None:
    _, secret = app_key
    response = post(client, secret, [{"status": "teapot"}])

    assert response.status_code == 400
    assert response.json()["rejected"][0]["index"] == 0
    assert not RequestLog.objects.exists()


def test_resending_records_does_not_store_or_count_them_twice(
    client: Client, app_key: tuple[AppKey, str]
) -> None:
    _, secret = app_key
    batch = [record(id="a", status=500, error="overloaded"), record(id="b")]
    post(client, secret, batch)

    answer = post(client, secret, [*batch, record(id="c")]).json()

    assert (answer["created"], answer["duplicates"]) == (1, 2)
    assert [a["duplicate"] for a in answer["accepted"]] == [True, True, False]
    assert RequestLog.objects.count() == 3
    assert ErrorGroup.objects.get().count == 1
    assert UsageMinute.objects.get().requests == 3


@pytest.mark.parametrize("body", ["{not json", "", "\xff\xfe"])
def test_a_body_that_is_not_json_is_a_400(client: Client, app_key: tuple[AppKey, str], body: str) -> None:
    _, secret = app_key
    data = body.encode("latin-1")
    response = post(client, secret, data)
    assert response.status_code == 400
    assert response.json()["detail"]


@pytest.mark.parametrize("body", [{"endpoint": "/v1/models", "status": 200}, 42, "text"])
def test_a_json_body_that_is_not_an_array_is_a_400(
    client: Client, app_key: tuple[AppKey, str], body: object
) -> None:
    _, secret = app_key
    response = post(client, secret, json.dumps(body))
    assert response.status_code == 400
    assert "array" in response.json()["detail"]


@override_settings(INGEST_MAX_BYTES=1000)
def test_a_body_above_the_byte_limit_is_a_413(client: Client, app_key: tuple[AppKey, str]) -> None:
    _, secret = app_key
    response = post(client, secret, [record(id=f"r{n}") for n in range(20)])
    assert response.status_code == 413
    assert not RequestLog.objects.exists()


@override_settings(INGEST_MAX_RECORDS=5)
def test_more_records_than_allowed_is_a_413(client: Client, app_key: tuple[AppKey, str]) -> None:
    _, secret = app_key
    response = post(client, secret, [record() for _ in range(6)])
    assert response.status_code == 413
    assert post(client, secret, [record() for _ in range(5)]).status_code == 200


@pytest.mark.parametrize("authorization", [None, "Bearer tdk_nope_nope", "Bearer tdo_x_y", "Basic abc"])
def test_a_bad_key_gets_a_together_shaped_401(client: Client, app_key: tuple[AppKey, str],
                                              authorization: str | None) -> None:
    headers = {"HTTP_AUTHORIZATION": authorization} if authorization else {}
    body = json.dumps([record()])
    response = client.post("/api/ingest", data=body, content_type="application/json", **headers)

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert not RequestLog.objects.exists()


def test_a_revoked_app_key_is_refused(client: Client, app_key: tuple[AppKey, str]) -> None:
    key, secret = app_key
    AppKey.objects.filter(id=key.id).update(status=AppKey.Status.REVOKED)

    assert post(client, secret, [record()]).status_code == 401


def test_a_refused_key_is_not_echoed(client: Client, app_key: tuple[AppKey, str]) -> None:
    _, secret = app_key
    presented = secret + "x"
    response = client.post("/api/ingest", data="[]", content_type="application/json",
                           HTTP_AUTHORIZATION=f"Bearer {presented}")

    assert response.status_code == 401
    assert secret not in response.content.decode()


def test_an_unavailable_database_is_a_503_with_retry_after(
    client: Client, app_key: tuple[AppKey, str]
) -> None:
    _, secret = app_key

    def database_down(execute, sql, params, many, context):  # noqa: ANN001, ANN202
        if "traffic_" in sql:
            raise OperationalError("could not connect to server")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(database_down):
        response = post(client, secret, [record(id="later")])

    assert response.status_code == 503
    assert int(response["Retry-After"]) > 0
    assert response.json()["error"]["code"] == "database_unavailable"
    assert post(client, secret, [record(id="later")]).json()["created"] == 1


# Fuzzing from the OpenAPI document, ingest included: tests/security/test_fuzz.py.
