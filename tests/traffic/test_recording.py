from __future__ import annotations

import secrets
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection, connections

from together_dash.catalog.models import ModelInfo
from together_dash.catalog.pricing import invalidate_prices
from together_dash.keys.models import AppKey, TogetherKey
from together_dash.traffic.entries import LogEntry
from together_dash.traffic.models import ErrorGroup, RequestLog, UsageHour, UsageMinute
from together_dash.traffic.recording import record_entries

T0 = datetime(2026, 3, 1, 12, 0, 5, tzinfo=UTC)
MODEL = "meta-llama/Llama-3.3-70B-Instruct-Turbo"


@pytest.fixture
def upstream(db: None) -> TogetherKey:
    return TogetherKey.create("main", "tgp_" + "a" * 40)


@pytest.fixture
def app_key(upstream: TogetherKey) -> AppKey:
    key = AppKey(name="web", upstream_key=upstream)
    key.issue()
    key.save()
    return key


def ok(upstream: TogetherKey, at: datetime = T0, **fields: object) -> LogEntry:
    values = {
        "created_at": at, "endpoint": "/v1/chat/completions", "upstream_key_id": upstream.id,
        "model_requested": MODEL, "status_code": 200, "latency_ms": 180.0,
        "prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15,
    }
    return LogEntry(**{**values, **fields})


def failed(upstream: TogetherKey, status: int, category: str, kind: str, at: datetime = T0,
           **fields: object) -> LogEntry:
    values = {"status_code": status, "category": category, "kind": kind, "error_message": f"HTTP {status}",
              "prompt_tokens": None, "completion_tokens": None, "total_tokens": None}
    return ok(upstream, at, **{**values, **fields})


def test_it_stores_every_entry_with_its_fields(upstream: TogetherKey) -> None:
    result = record_entries([ok(upstream, request_id="req-1", stream=True, ttft_ms=42.5)])

    assert (result.created, result.duplicates) == (1, 0)
    log = RequestLog.objects.get()
    assert (log.created_at, log.endpoint, log.model_requested) == (T0, "/v1/chat/completions", MODEL)
    assert (log.status_code, log.stream, log.ttft_ms, log.request_id) == (200, True, 42.5, "req-1")
    assert (log.prompt_tokens, log.completion_tokens, log.total_tokens) == (10, 5, 15)
    assert log.cached_tokens is None
    assert log.upstream_key_id == upstream.id and log.error_group_id is None


def test_errors_are_grouped_and_each_log_points_at_its_group(upstream: TogetherKey) -> None:
    entries = [
        failed(upstream, 429, "rate_limit", "rate_limited", T0),
        failed(upstream, 429, "rate_limit", "rate_limited", T0 + timedelta(seconds=30), error_message="last"),
        failed(upstream, 402, "billing", "insufficient_credits", T0 + timedelta(seconds=10)),
        ok(upstream),
    ]
    record_entries(entries)

    rate = ErrorGroup.objects.get(kind="rate_limited")
    assert (rate.count, rate.first_seen, rate.last_seen) == (2, T0, T0 + timedelta(seconds=30))
    assert (rate.last_message, rate.last_status, rate.state) == ("last", 429, "open")
    assert (rate.model, rate.endpoint, rate.upstream_key_id) == (MODEL, "/v1/chat/completions", upstream.id)
    assert rate.fingerprint == ErrorGroup.make_fingerprint(
        "rate_limit", "rate_limited", MODEL, "/v1/chat/completions", upstream.id
    )
    assert set(RequestLog.objects.filter(status_code=429).values_list("error_group", flat=True)) == {rate.id}
    assert ErrorGroup.objects.get(kind="insufficient_credits").count == 1
    assert RequestLog.objects.get(status_code=200).error_group_id is None


def test_a_second_batch_adds_to_existing_groups(upstream: TogetherKey) -> None:
    record_entries([failed(upstream, 500, "server", "model_overloaded", T0)])
    record_entries([failed(upstream, 500, "server", "model_overloaded", T0 - timedelta(minutes=5))])

    group = ErrorGroup.objects.get()
    assert group.count == 2
    assert group.first_seen == T0 - timedelta(minutes=5)
    assert group.last_seen == T0


def test_a_resolved_group_reopens_when_the_error_comes_back(upstream: TogetherKey) -> None:
    record_entries([failed(upstream, 401, "auth", "invalid_api_key", T0)])
    group = ErrorGroup.objects.get()
    ErrorGroup.objects.filter(id=group.id).update(state="resolved", resolved_at=T0 + timedelta(minutes=1))

    record_entries([failed(upstream, 401, "auth", "invalid_api_key", T0 + timedelta(minutes=2))])

    group.refresh_from_db()
    assert (group.state, group.resolved_at, group.count) == ("open", None, 2)


def test_an_error_older_than_the_resolution_does_not_reopen_the_group(upstream: TogetherKey) -> None:
    record_entries([failed(upstream, 401, "auth", "invalid_api_key", T0)])
    ErrorGroup.objects.update(state="resolved", resolved_at=T0 + timedelta(minutes=10))

    record_entries([failed(upstream, 401, "auth", "invalid_api_key", T0 + timedelta(minutes=1))])

    assert ErrorGroup.objects.get().state == "resolved"


def test_a_resent_client_id_is_skipped_and_not_counted_again(app_key: AppKey, upstream: TogetherKey) -> None:
    def entry(client_id: str) -> LogEntry:
        return failed(upstream, 503, "server", "service_unavailable", source="ingest",
                      app_key_id=app_key.id, client_id=client_id)

    first = record_entries([entry("a"), entry("b")])
    again = record_entries([entry("b"), entry("c"), entry("c")])

    assert (first.created, first.duplicates) == (2, 0)
    assert (again.created, again.duplicates, again.duplicate_indexes) == (1, 2, [0, 2])
    assert RequestLog.objects.count() == 3
    group = ErrorGroup.objects.get()
    assert group.count == 3
    assert RequestLog.objects.filter(error_group=group).count() == 3
    assert UsageMinute.objects.get().requests == 3
    assert UsageMinute.objects.get().errors_server == 3


def test_the_same_client_id_from_two_app_keys_is_two_records(app_key: AppKey, upstream: TogetherKey) -> None:
    other = AppKey(name="batch", upstream_key=upstream)
    other.issue()
    other.save()

    record_entries([ok(upstream, app_key_id=key.id, client_id="same") for key in (app_key, other)])

    assert RequestLog.objects.count() == 2


def test_the_result_tells_402s_and_successes_per_key(upstream: TogetherKey) -> None:
    entries = [
        ok(upstream),
        failed(upstream, 402, "billing", "insufficient_credits", T0 + timedelta(seconds=9)),
        failed(upstream, 402, "billing", "insufficient_credits", T0 + timedelta(seconds=3)),
        failed(upstream, 500, "server", "model_overloaded"),
        ok(upstream, upstream_key_id=None),
    ]
    result = record_entries(entries)

    outcome = result.keys[upstream.id]
    assert (outcome.payment_required, outcome.successes) == (2, 1)
    assert outcome.first_payment_required_at == T0 + timedelta(seconds=3)
    assert result.keys[None].successes == 1


@pytest.mark.parametrize(
    ("method", "endpoint", "billed"),
    [
        ("POST", "/v1/chat/completions", True),
        ("POST", "/v1/completions", True),
        ("POST", "/v1/embeddings", True),
        ("POST", "/v1/images/generations", True),
        ("POST", "/v1/fine-tunes", True),
        ("GET", "/v1/models", False),
        ("GET", "/v1/whoami", False),
        ("GET", "/v1/fine-tunes/ft-123", False),
        ("POST", "/v1/files/upload", False),
        ("GET", "/v1/chat/completions", False),
    ],
)
def test_only_a_successful_billed_call_counts_as_a_success(
    upstream: TogetherKey, method: str, endpoint: str, billed: bool
) -> None:
    """A free call succeeds with no credits left, so it must not tell the billing alert they are back."""
    result = record_entries([ok(upstream, method=method, endpoint=endpoint)])
    assert result.keys[upstream.id].successes == (1 if billed else 0)


def test_cost_is_priced_from_the_catalog(upstream: TogetherKey) -> None:
    ModelInfo.objects.create(model_id=MODEL, pricing_input=Decimal("0.88"), pricing_output=Decimal("2.00"))
    invalidate_prices()

    record_entries([ok(upstream), ok(upstream, model_requested="unpriced/model")])

    expected = (10 * Decimal("0.88") + 5 * Decimal("2.00")) / 1_000_000
    assert RequestLog.objects.get(model_requested=MODEL).cost_usd == expected
    assert RequestLog.objects.get(model_requested="unpriced/model").cost_usd is None
    assert UsageMinute.objects.get(model=MODEL).cost_usd == expected


def test_values_no_column_can_hold_are_cleaned_not_fatal(upstream: TogetherKey) -> None:
    result = record_entries([
        ok(upstream, model_requested="m\x00" + "x" * 300, prompt_tokens=2**40, status_code=70_000,
           error_message="bad \ud800 text", endpoint="/v1/\x00chat"),
    ])

    assert result.created == 1
    log = RequestLog.objects.get()
    assert log.model_requested == "m" + "x" * 198  # cut to the column's 200, then the NUL dropped
    assert (log.prompt_tokens, log.status_code, log.endpoint) == (None, None, "/v1/chat")
    assert log.error_message == "bad ? text"


def test_naive_timestamps_are_taken_as_utc(upstream: TogetherKey) -> None:
    record_entries([ok(upstream, at=T0.replace(tzinfo=None))])
    assert RequestLog.objects.get().created_at == T0


def test_an_empty_batch_does_nothing(db: None) -> None:
    result = record_entries([])
    assert (result.created, result.duplicates, result.keys) == (0, 0, {})


def test_nothing_is_stored_when_part_of_the_batch_fails(upstream: TogetherKey) -> None:
    def fail_on_rollups(execute, sql, params, many, context):  # noqa: ANN001, ANN202
        if "usagehour" in sql:
            raise RuntimeError("disk full")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(fail_on_rollups), pytest.raises(RuntimeError):
        record_entries([failed(upstream, 500, "server", "model_overloaded")])

    assert not RequestLog.objects.exists()
    assert not ErrorGroup.objects.exists()
    assert not UsageMinute.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_do_not_lose_increments() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("SQLite serialises writers; the race only exists on PostgreSQL")
    key = TogetherKey.create("race", "tgp_" + "b" * 40)
    batches, per_batch = 20, 50
    errors: list[BaseException] = []

    def writer(offset: int) -> None:
        try:
            for batch in range(batches):
                entries = [failed(key, 429, "rate_limit", "rate_limited", T0 + timedelta(seconds=i % 3))
                           for i in range(per_batch)]
                entries += [ok(key, T0 + timedelta(seconds=batch % 60)) for _ in range(per_batch)]
                record_entries(entries)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    total = 2 * batches * per_batch * 2
    assert RequestLog.objects.count() == total
    assert ErrorGroup.objects.get().count == total // 2
    minute = UsageMinute.objects.get()
    assert (minute.requests, minute.errors_rate_limit) == (total, total // 2)
    assert UsageHour.objects.get().requests == total


@pytest.mark.django_db(transaction=True)
def test_the_same_records_sent_twice_at_once_are_stored_once() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("SQLite serialises writers; the race only exists on PostgreSQL")
    key = TogetherKey.create("race", "tgp_" + "c" * 40)
    app_key = AppKey(name="resender", upstream_key=key)
    app_key.issue()
    app_key.save()
    rounds, per_round = 5, 200
    results: list = []
    errors: list[BaseException] = []

    def sender(barrier: threading.Barrier, batch: list[LogEntry]) -> None:
        try:
            barrier.wait()
            results.append(record_entries(batch))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            connections.close_all()

    for round_ in range(rounds):
        batch = [failed(key, 500, "server", "model_overloaded", source="ingest", app_key_id=app_key.id,
                        client_id=f"{round_}-{n}") for n in range(per_round)]
        barrier = threading.Barrier(2)
        threads = [threading.Thread(target=sender, args=(barrier, batch)) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    assert errors == []
    assert sum(result.created for result in results) == rounds * per_round
    assert sum(result.duplicates for result in results) == rounds * per_round
    assert RequestLog.objects.count() == rounds * per_round
    assert ErrorGroup.objects.get().count == rounds * per_round
    assert UsageMinute.objects.get().requests == rounds * per_round


def test_a_secret_in_any_stored_string_is_redacted_and_its_group_shows_none(upstream: TogetherKey) -> None:
    key = f"tdk_ab12cd34_{secrets.token_urlsafe(32)}"
    record_entries([failed(upstream, 404, "validation", "model_not_found", model_requested=key,
                           model_served=key, request_id=key, endpoint=f"/v1/{key}",
                           error_message=f"Unable to access model {key}")])

    log = RequestLog.objects.get()
    stored = [log.model_requested, log.model_served, log.request_id, log.endpoint, log.error_message]
    assert all(key not in value and key[13:25] not in value for value in stored)
    assert log.model_requested == "[redacted]"
    assert ErrorGroup.objects.get().model == "[redacted]"


def test_a_secret_cut_by_the_column_length_is_still_redacted(upstream: TogetherKey) -> None:
    key = f"tdk_ab12cd34_{secrets.token_urlsafe(32)}"
    record_entries([ok(upstream, model_requested="m" * 179 + " " + key)])  # the column keeps 200 characters
    assert key[13:20] not in RequestLog.objects.get().model_requested


def test_two_secret_like_client_ids_stay_two_records(app_key: AppKey, upstream: TogetherKey) -> None:
    ids = [f"tdk_ab12cd34_{secrets.token_urlsafe(32)}" for _ in range(2)]
    result = record_entries([ok(upstream, source="ingest", app_key_id=app_key.id, client_id=i) for i in ids])
    assert (result.created, result.duplicates) == (2, 0)
    stored = RequestLog.objects.values_list("client_id", flat=True)
    assert all(client_id.startswith("[redacted]:") for client_id in stored)


def test_cached_prompt_tokens_are_priced_at_the_cached_input_price(upstream: TogetherKey) -> None:
    ModelInfo.objects.create(
        model_id=MODEL, pricing_input=Decimal("1.25"), pricing_output=Decimal("1.25"),
        pricing_cached_input=Decimal("0.5"),
    )

    record_entries([ok(upstream, prompt_tokens=2000, completion_tokens=100, cached_tokens=1500)])

    # 500 fresh x 1.25 + 1500 cached x 0.5 + 100 x 1.25, per 1M tokens
    assert RequestLog.objects.get().cost_usd == Decimal("0.00150000")
    assert UsageHour.objects.get().cost_usd == Decimal("0.00150000")


def test_a_request_to_an_unpriced_model_is_counted_unpriced_never_zero(upstream: TogetherKey) -> None:
    ModelInfo.objects.create(model_id=MODEL)  # listed, without a price

    record_entries([ok(upstream), ok(upstream, model_requested="org/not-in-catalog"),
                    failed(upstream, 500, "server", "model_overloaded")])

    assert list(RequestLog.objects.values_list("cost_usd", flat=True)) == [None, None, None]
    minutes = dict(UsageMinute.objects.values_list("model", "unpriced_requests"))
    assert minutes == {MODEL: 1, "org/not-in-catalog": 1}
    assert UsageHour.objects.get(model=MODEL).cost_usd == 0
