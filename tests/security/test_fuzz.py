"""The JSON API fuzzed from its own OpenAPI document (/api/openapi.json): every operation, called the
way a client authenticates for it, never answers 5xx; without credentials every one is refused; and
fuzzed ingest never loses or doubles a record. This is the one place the API is fuzzed.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import hypothesis
import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from django.utils import timezone
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from together_dash.catalog.polling import poll_models
from together_dash.keys.models import ApiToken, AppKey, TogetherKey
from together_dash.simulator.testing import RunningSimulator
from together_dash.traffic.entries import LogEntry
from together_dash.traffic.models import RequestLog
from together_dash.traffic.recording import record_entries

pytestmark = pytest.mark.django_db

INGEST = "/api/ingest"
LLAMA = "meta-llama/Llama-3.3-70B-Instruct-Turbo"
FUZZ = hypothesis.settings(
    max_examples=60, deadline=None, derandomize=True, database=None,
    suppress_health_check=list(hypothesis.HealthCheck),
)


@schemathesis.serializer("application/x-ndjson")
def _ndjson(context: object, value: object) -> bytes:
    return value.encode("utf-8", "surrogatepass") if isinstance(value, str) else json.dumps(value).encode()


def in_test_transaction(django_app: Callable) -> Callable:
    """The WSGI app, called as Django's test client calls it: the test's transaction (and connection)
    outlives each request, because the signal that closes old connections is off while it runs."""

    def app(environ: dict, start_response: Callable) -> list[bytes]:
        request_started.disconnect(close_old_connections)
        request_finished.disconnect(close_old_connections)
        try:
            response = django_app(environ, start_response)
            try:
                return [b"".join(response)]
            finally:
                response.close()
        finally:
            request_started.connect(close_old_connections)
            request_finished.connect(close_old_connections)

    return app


@pytest.fixture
def api_schema(db: None) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_wsgi("/api/openapi.json", in_test_transaction(get_wsgi_application()))


@pytest.fixture
def app_key(db: None) -> tuple[AppKey, str]:
    key = AppKey(name="batch-jobs", upstream_key=TogetherKey.create("main", "tgp_" + "a" * 40))
    secret = key.issue()
    key.save()
    return key, secret


@pytest.fixture
def ops_token(app_key: tuple[AppKey, str], simulator: RunningSimulator, settings: object) -> str:
    """An ops token (what scripts use for everything but ingest), with data to read: a catalog and logs."""
    simulator.reset()
    settings.TOGETHER_BASE_URL = simulator.base_url
    assert poll_models().ok == 1  # through the app key's upstream key
    token = ApiToken(name="fuzz")
    ops = token.issue()
    token.save()
    errors = {429: ("rate_limit", "request_rate_limited"), 402: ("billing", "insufficient_credits")}
    record_entries([
        LogEntry(
            created_at=timezone.now(), endpoint="/v1/chat/completions", model_requested=LLAMA,
            upstream_key_id=app_key[0].upstream_key_id, status_code=status, latency_ms=120.0,
            category=errors.get(status, ("", ""))[0], kind=errors.get(status, ("", ""))[1],
        )
        for status in (200, 429, 402)
    ])
    return ops


api = schemathesis.pytest.from_fixture("api_schema")
# Not schemathesis's acceptance checks: rules the schema cannot state (a window of at most 31 days, a
# cursor from this API) rightly turn schema-valid requests away with a documented 400.
CONFORMANCE = [status_code_conformance, content_type_conformance, response_schema_conformance]


@api.exclude(path=INGEST).parametrize()
@FUZZ
def test_fuzzed_calls_with_an_ops_token_never_fail(
    case: schemathesis.Case, ops_token: str
) -> None:
    headers = {"Authorization": f"Bearer {ops_token}"}
    response = case.call(headers=headers)

    assert response.status_code < 500, response.text[:500]
    # Every answer is one the document names, with its content type and body shape.
    case.validate_response(response, headers=headers, checks=CONFORMANCE)


@api.parametrize()
@hypothesis.settings(FUZZ, max_examples=15)
def test_fuzzed_calls_without_credentials_are_refused(case: schemathesis.Case, db: None) -> None:
    response = case.call(headers={"Authorization": ""})

    if case.method.upper() != case.operation.method.upper():
        assert response.status_code == 405  # schemathesis also tries the methods the operation lacks
    else:
        # 403 where a session could authenticate: a POST without a CSRF token is refused before that;
        # 400 for a NUL byte in the URL, refused before anything else (core/middleware.py).
        assert response.status_code in (400, 401, 403), response.text[:500]
        if response.status_code == 400:
            assert "NUL" in response.json()["detail"]


@pytest.fixture
def ledger() -> dict[str, object]:
    """What the fuzzed calls were told was stored: the running total and each new record's id."""
    return {"created": 0, "ids": set()}


@api.include(path=INGEST, method="POST").parametrize()
@hypothesis.settings(FUZZ, max_examples=100)
def test_fuzzed_ingest_never_fails_and_never_loses_or_doubles_a_record(
    case: schemathesis.Case, app_key: tuple[AppKey, str], ledger: dict[str, object]
) -> None:
    key, secret = app_key
    headers = {"Authorization": f"Bearer {secret}"}
    response = case.call(headers=headers)

    assert response.status_code < 500, response.text[:500]
    case.validate_response(response, headers=headers, checks=CONFORMANCE)
    if response.status_code in (200, 400) and "accepted" in response.json():
        answer = response.json()
        new = [a["id"] for a in answer["accepted"] if not a["duplicate"]]
        assert answer["created"] == len(new)
        ledger["created"] += answer["created"]
        ids = [client_id for client_id in new if client_id is not None]
        assert not set(ids) & ledger["ids"], "a record reported new twice"
        ledger["ids"].update(ids)
    stored = RequestLog.objects.filter(app_key=key)
    assert stored.count() == ledger["created"]
    assert stored.filter(client_id__isnull=False).count() == len(ledger["ids"])
