"""The reconciliation's API validation and access, and the /billing/ page: who sees it, what it says."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest
import time_machine
from django.core.management import call_command
from django.test import Client

from tests.billing.conftest import MODEL, Biller
from tests.dashboard.conftest import logged_in, make_user
from together_dash.billing.reconciliation import CAUSES
from together_dash.catalog.polling import poll_models
from together_dash.pollers.testing import add_key

pytestmark = pytest.mark.django_db

API = "/api/billing/reconciliation"
CALLS_AT = datetime(2026, 3, 10, 9, 20, tzinfo=UTC)
POLL_AT = datetime(2026, 3, 10, 10, 5, tzinfo=UTC)


@pytest.fixture
def token() -> str:
    out = io.StringIO()
    call_command("create_api_token", "reconcile", stdout=out, stderr=io.StringIO())
    return out.getvalue().strip()


def api(client: Client, token: str, **params: str):  # noqa: ANN201
    return client.get(API, params, HTTP_AUTHORIZATION=f"Bearer {token}")


# ---- the API -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("params", "status", "says"),
    [
        ({"start": "yesterday"}, 422, "start"),
        ({"end": "2026-13-40T00:00:00Z"}, 422, "end"),
        ({"granularity": "week"}, 422, "granularity"),
        ({"start": "2026-03-10T10:00:00Z", "end": "2026-03-10T09:00:00Z"}, 400, "start must be before end"),
        ({"start": "2026-03-10T10:00:00Z", "end": "2026-03-10T10:00:00Z"}, 400, "start must be before end"),
        ({"start": "2026-01-01T00:00:00Z", "end": "2026-03-01T00:00:00Z"}, 400, "at most 31 days"),
        (
            {"start": "2024-01-01T00:00:00Z", "end": "2026-01-01T00:00:00Z", "granularity": "day"},
            400, "at most 366 days",
        ),
        ({"end": "0001-01-01T00:00:00Z"}, 400, "end is too early"),
    ],
)
def test_bad_parameters_get_a_clear_error(
    client: Client, token: str, params: dict[str, str], status: int, says: str
) -> None:
    answer = api(client, token, **params)

    assert answer.status_code == status
    assert says in str(answer.json()["detail"])


def test_without_credentials_it_answers_401_and_a_login_without_a_role_reads_nothing(
    client: Client, settings: object
) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    assert client.get(API).status_code == 401
    assert logged_in(make_user("nora", None)).get(API).status_code == 401


def test_an_ops_token_reads_it_and_empty_ranges_are_honest(client: Client, token: str) -> None:
    answer = api(client, token, start="2026-03-10T09:30:00Z", end="2026-03-10T11:10:00Z")

    assert answer.status_code == 200
    body = answer.json()
    # Rounded out to whole hours; nothing billed (no organisation) and nothing observed.
    assert (body["start"], body["end"]) == ("2026-03-10T09:00:00Z", "2026-03-10T12:00:00Z")
    assert [w["billed_cost"] for w in body["windows"]] == [None, None, None]
    assert body["rows"] == [] and body["organizations"] == []
    assert set(body["causes"]) == set(CAUSES)


def test_it_is_in_the_openapi_document(client: Client) -> None:
    paths = client.get("/api/openapi.json").json()["paths"]
    assert "get" in paths[API]


# ---- the page ----------------------------------------------------------------------------------------

def test_anonymous_visitors_are_sent_to_log_in_and_a_login_without_a_role_is_refused(
    client: Client, settings: object
) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    answer = client.get("/billing/")
    assert answer.status_code == 302 and answer["Location"].startswith("/accounts/login/")
    assert logged_in(make_user("nora", None)).get("/billing/").status_code == 403


def test_before_the_poller_ever_ran_the_page_says_so(viewer_web: Client) -> None:
    page = viewer_web.get("/billing/")

    assert page.status_code == 200
    text = page.content.decode()
    assert 'id="empty-poller"' in text and "manage.py poll_billing" in text
    assert 'href="/billing/"' in text  # the nav link


def test_with_a_poll_but_no_usage_it_says_no_finished_window_yet(biller: Biller, viewer_web: Client) -> None:
    add_key("main")
    biller.poll(POLL_AT)

    with time_machine.travel(POLL_AT, tick=False):
        page = viewer_web.get("/billing/").content.decode()

    assert 'id="empty-windows"' in page and "Simulated Org" in page
    assert 'id="empty-poller"' not in page and 'id="empty-organizations"' not in page


def test_a_poll_whose_keys_name_no_organisation_says_none_yet(viewer_web: Client) -> None:
    from together_dash.billing.polling import poll_billing

    poll_billing()  # no upstream key at all: the poll runs, no organisation is found

    page = viewer_web.get("/billing/").content.decode()

    assert 'id="empty-organizations"' in page


def test_the_page_shows_billed_observed_and_the_cause_in_words(biller: Biller, viewer_web: Client) -> None:
    _, secret = add_key("main")
    poll_models()
    biller.at(CALLS_AT)
    biller.chat(secret)  # straight to Together: nothing observed, all of it bypassed
    biller.poll(POLL_AT)

    with time_machine.travel(POLL_AT, tick=False):
        page = viewer_web.get("/billing/", {"range": "24h", "granularity": "hour"}).content.decode()

    assert 'data-cause="bypassed"' in page and CAUSES["bypassed"] in page
    assert MODEL in page and 'data-static-chart="billing"' in page and 'id="billing-data"' in page
    assert "chart.js/chart.umd.min.js" in page


def test_an_unknown_granularity_falls_back_and_says_why(viewer_web: Client) -> None:
    page = viewer_web.get("/billing/", {"granularity": "week"}).content.decode()
    assert "Unknown granularity" in page
