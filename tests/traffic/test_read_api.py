from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from asgiref.sync import async_to_sync
from django.core.management import call_command
from django.test import AsyncClient, Client

from together_dash.keys.models import ApiToken, AppKey, TogetherKey
from together_dash.traffic import listing
from together_dash.traffic.entries import LogEntry
from together_dash.traffic.models import ErrorGroup, RequestLog
from together_dash.traffic.recording import record_entries

pytestmark = pytest.mark.django_db

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
MODEL = "meta-llama/Llama-3.3-70B-Instruct-Turbo"
ENDPOINTS = ["/api/requests", "/api/requests.csv", "/api/errors", "/api/usage"]


@pytest.fixture(autouse=True)
def frozen_time() -> None:
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def upstream() -> TogetherKey:
    return TogetherKey.create("main", "tgp_" + "a" * 40)


@pytest.fixture
def token() -> str:
    out = io.StringIO()
    call_command("create_api_token", "grafana", stdout=out, stderr=io.StringIO())
    return out.getvalue().strip()


def get(client: Client, token: str, path: str, **params: object):  # noqa: ANN201
    return client.get(path, params, HTTP_AUTHORIZATION=f"Bearer {token}")


def entry(upstream: TogetherKey | None, minutes_ago: float, **fields: object) -> LogEntry:
    values = {"created_at": NOW - timedelta(minutes=minutes_ago), "endpoint": "/v1/chat/completions",
              "upstream_key_id": upstream.id if upstream else None, "model_requested": MODEL,
              "status_code": 200}
    return LogEntry(**{**values, **fields})


# ---- authentication ----------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ENDPOINTS)
def test_without_credentials_the_read_api_answers_401_json(client: Client, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 401
    assert response["Content-Type"].startswith("application/json")


def test_the_create_api_token_command_prints_a_token_that_works(client: Client, token: str) -> None:
    assert token.startswith("tdo_")
    stored = ApiToken.objects.get()
    assert stored.name == "grafana" and token not in (stored.secret_hash, stored.prefix)
    for path in ENDPOINTS:
        assert get(client, token, path).status_code == 200, path
    assert ApiToken.objects.get().last_used_at == NOW


def test_a_revoked_or_expired_token_is_refused(client: Client, token: str) -> None:
    ApiToken.objects.update(status=ApiToken.Status.REVOKED)
    assert get(client, token, "/api/requests").status_code == 401
    ApiToken.objects.update(status=ApiToken.Status.ACTIVE, expires_at=NOW - timedelta(seconds=1))
    assert get(client, token, "/api/requests").status_code == 401


def test_an_app_key_is_not_an_ops_token(client: Client, upstream: TogetherKey) -> None:
    app_key = AppKey(name="web", upstream_key=upstream)
    secret = app_key.issue()
    app_key.save()
    assert get(client, secret, "/api/requests").status_code == 401


def test_a_logged_in_session_works(admin_client: Client) -> None:
    for path in ENDPOINTS:
        assert admin_client.get(path).status_code == 200, path


# ---- /api/requests -----------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ENDPOINTS)
def test_a_login_without_a_dashboard_role_reads_nothing(client: Client, path: str) -> None:
    from django.contrib.auth.models import Group, User

    user = User.objects.create_user("no-role", password="a-long-passphrase-42")
    client.force_login(user)
    assert client.get(path).status_code == 401
    user.groups.add(Group.objects.get_or_create(name="viewer")[0])
    assert client.get(path).status_code == 200


def test_keyset_pages_return_every_row_exactly_once(
    client: Client, token: str, upstream: TogetherKey
) -> None:
    # Several rows share a timestamp, so pages must break ties on the id.
    record_entries([entry(upstream, minutes_ago=1 + n // 4) for n in range(57)])

    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 10, **({"cursor": cursor} if cursor else {})}
        page = get(client, token, "/api/requests", **params).json()
        seen += [(item["created_at"], item["id"]) for item in page["items"]]
        pages, cursor = pages + 1, page["next_cursor"]
        if cursor is None:
            break

    assert pages == 6
    assert sorted(id_ for _, id_ in seen) == sorted(RequestLog.objects.values_list("id", flat=True))
    assert len(set(seen)) == 57
    assert seen == sorted(seen, reverse=True)


def test_filters_narrow_the_listing(client: Client, token: str, upstream: TogetherKey) -> None:
    other = TogetherKey.create("other", "tgp_" + "b" * 40)
    record_entries([
        entry(upstream, 1),
        entry(upstream, 2, status_code=429, category="rate_limit", kind="rate_limited"),
        entry(other, 3, model_requested="m2", status_code=500, category="server", kind="model_overloaded"),
    ])

    def ids(**params: object) -> int:
        return len(get(client, token, "/api/requests", **params).json()["items"])

    assert ids() == 3
    assert ids(category="rate_limit") == 1
    assert ids(kind="model_overloaded") == 1
    assert ids(model="m2") == 1
    assert ids(key=other.id) == 1
    assert ids(status=200) == 1
    assert ids(start=(NOW - timedelta(minutes=2, seconds=30)).isoformat()) == 2
    assert ids(app_key=12345) == 0


def test_the_default_window_is_the_last_24_hours(client: Client, token: str, upstream: TogetherKey) -> None:
    record_entries([entry(upstream, 60), entry(upstream, 25 * 60)])
    page = get(client, token, "/api/requests").json()
    assert len(page["items"]) == 1
    assert datetime.fromisoformat(page["end"]) - datetime.fromisoformat(page["start"]) == timedelta(hours=24)


@pytest.mark.parametrize("params", [
    {"start": "2026-01-01T00:00:00Z", "end": "2026-03-01T00:00:00Z"},
    {"start": "2026-03-02T00:00:00Z", "end": "2026-03-01T00:00:00Z"},
    {"cursor": "not-a-cursor"},
])
def test_unusable_windows_and_cursors_are_a_400(client: Client, token: str, params: dict[str, str]) -> None:
    response = get(client, token, "/api/requests", **params)
    assert response.status_code == 400
    assert response.json()["detail"]


def test_a_page_is_capped_at_500(client: Client, token: str) -> None:
    assert get(client, token, "/api/requests", limit=501).status_code == 422


def test_rows_show_no_secret(client: Client, token: str, upstream: TogetherKey) -> None:
    record_entries([entry(upstream, 1, key_fingerprint=upstream.fingerprint)])
    body = get(client, token, "/api/requests").content.decode()
    assert upstream.secret not in body and token not in body
    assert upstream.fingerprint in body


# ---- CSV ---------------------------------------------------------------------------------------------

def test_the_csv_export_streams_every_matching_row(client: Client, token: str, upstream: TogetherKey) -> None:
    record_entries([entry(upstream, 1 + n / 10, status_code=200 if n % 3 else 503) for n in range(25)])

    response = get(client, token, "/api/requests.csv", status=200)

    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert len(rows) == 16 and {row["status"] for row in rows} == {"200"}
    assert rows[0]["model"] == MODEL


def test_the_csv_export_streams_under_asgi_too(token: str, upstream: TogetherKey) -> None:
    record_entries([entry(upstream, 1 + n) for n in range(5)])

    async def download() -> tuple[int, bool, bytes]:
        response = await AsyncClient().get("/api/requests.csv", headers={"Authorization": f"Bearer {token}"})
        body = b"".join([part async for part in response.streaming_content])
        return response.status_code, response.is_async, body

    status, is_async, body = async_to_sync(download)()
    assert (status, is_async) == (200, True)
    assert len(body.decode().strip().splitlines()) == 6


def test_export_reads_in_keyset_chunks(upstream: TogetherKey) -> None:
    record_entries([entry(upstream, 1 + n // 3) for n in range(20)])
    span = listing.window(None, None)

    rows = list(listing.iterate(span, listing.RequestFilters(), chunk=7))

    assert [row.id for row in rows] == list(
        RequestLog.objects.order_by("-created_at", "-id").values_list("id", flat=True)
    )


def test_csv_cells_cannot_start_a_formula(client: Client, token: str, upstream: TogetherKey) -> None:
    record_entries([entry(upstream, 1, request_id="=HYPERLINK(1)")])
    body = b"".join(get(client, token, "/api/requests.csv").streaming_content).decode()
    assert "'=HYPERLINK(1)" in body


# ---- /api/errors and /api/usage ----------------------------------------------------------------------

def test_error_groups_list_with_cause_and_fix(client: Client, token: str, upstream: TogetherKey) -> None:
    record_entries([entry(upstream, 1 + n, status_code=402, category="billing", kind="insufficient_credits")
                    for n in range(3)]
                   + [entry(upstream, 1, status_code=401, category="auth", kind="invalid_api_key")])
    ErrorGroup.objects.filter(kind="invalid_api_key").update(state="resolved", resolved_at=NOW)

    groups = get(client, token, "/api/errors").json()

    assert groups["total"] == 1
    billing = groups["items"][0]
    assert (billing["kind"], billing["count"], billing["state"]) == ("insufficient_credits", 3, "open")
    assert "credits" in billing["fix"] and billing["retryable"] is False
    assert get(client, token, "/api/errors", state="all", sort="count").json()["total"] == 2
    assert get(client, token, "/api/errors", state="resolved").json()["items"][0]["kind"] == "invalid_api_key"
    assert get(client, token, "/api/errors", category="auth").json()["total"] == 0


def test_usage_returns_the_series_and_totals(client: Client, token: str, upstream: TogetherKey) -> None:
    record_entries([entry(upstream, 1), entry(upstream, 1, status_code=429, category="rate_limit", kind="x"),
                    entry(upstream, 30)])

    usage = get(client, token, "/api/usage", start=(NOW - timedelta(hours=1)).isoformat()).json()

    assert usage["step"] == "minute" and len(usage["series"]) == 60
    assert usage["totals"]["requests"] == 3
    assert usage["totals"]["errors_by_category"]["rate_limit"] == 1
    assert sum(point["requests"] for point in usage["series"]) == 3
    week = get(client, token, "/api/usage", start=(NOW - timedelta(days=7)).isoformat()).json()
    assert week["step"] == "hour" and week["totals"]["requests"] == 3
