from __future__ import annotations

import html
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.test import Client, modify_settings
from django.urls import reverse
from django.utils import timezone

from together_dash.catalog.models import ModelChange, ModelInfo
from together_dash.jobs.models import BatchJob, FineTuneEvent, remainder_dir
from together_dash.pollers.models import PollerHeartbeat
from together_dash.proxy.metrics import DROPPED_CACHE_KEY
from together_dash.together.errors import TAXONOMY
from together_dash.traffic.entries import LogEntry
from together_dash.traffic.models import ErrorGroup, RequestLog
from together_dash.traffic.recording import record_entries

from .conftest import LLAMA, QWEN, Seed

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(seed: Seed) -> dict[str, object]:
    """A little of everything every page shows."""
    key = seed.key("prod")
    seed.model(LLAMA)
    seed.logs(key, LLAMA, timedelta(minutes=20), 6)
    seed.logs(key, LLAMA, timedelta(minutes=10), 3, kind="request_rate_limited")
    job = seed.finetune("ft-abc123", "running", (37, 100))
    batch = BatchJob.objects.create(batch_id="batch-1", status="COMPLETED", model_id=LLAMA)
    return {"key": key, "job": job, "batch": batch, "group": ErrorGroup.objects.get(),
            "log": RequestLog.objects.filter(category="rate_limit").first()}


def page_urls(world: dict[str, object]) -> list[str]:
    return [
        reverse("dashboard-overview"),
        reverse("dashboard-errors"),
        reverse("dashboard-error", args=[world["group"].id]),
        reverse("dashboard-requests"),
        reverse("dashboard-request", args=[world["log"].id]),
        reverse("dashboard-models"),
        reverse("dashboard-finetunes"),
        reverse("dashboard-finetune", args=[world["job"].job_id]),
        reverse("dashboard-batches"),
        reverse("dashboard-keys"),
        reverse("dashboard-key", args=[world["key"].id]),
        reverse("dashboard-runway"),
    ]


def text(response: object) -> str:
    return html.unescape(response.content.decode())


def test_every_page_renders_for_a_viewer(viewer_web: Client, world: dict[str, object]) -> None:
    for url in page_urls(world):
        response = viewer_web.get(url)
        assert response.status_code == 200, url


def test_every_page_sends_anonymous_visitors_to_the_login(client: Client, world: dict[str, object]) -> None:
    for url in page_urls(world):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("login")), url


def test_every_page_refuses_an_account_without_a_role(nobody_web: Client, world: dict[str, object]) -> None:
    for url in page_urls(world):
        assert nobody_web.get(url).status_code == 403, url


def test_the_overview_without_traffic_says_how_to_send_some(viewer_web: Client) -> None:
    page = text(viewer_web.get("/"))
    assert "No traffic in the last 24 hours" in page
    assert 'base_url="http://testserver/v1"' in page
    assert "manage.py create_app_key" in page and "/api/ingest" in page
    assert "No poller has run yet" in page


def test_the_overview_shows_figures_and_the_fix_of_the_top_group(
    viewer_web: Client, world: dict[str, object]
) -> None:
    response = viewer_web.get("/")
    page = text(response)
    cards = {card.name: card for card in response.context["cards"]}
    assert (cards["requests"].value, cards["error_rate"].value) == ("9", "33.3%")
    assert TAXONOMY["request_rate_limited"].fix in page
    assert reverse("dashboard-error", args=[world["group"].id]) in page
    assert "No traffic in" not in page


def test_the_overview_compares_with_the_previous_period(viewer_web: Client, seed: Seed) -> None:
    key = seed.key()
    seed.logs(key, LLAMA, timedelta(hours=2), 10)
    seed.logs(key, LLAMA, timedelta(hours=30), 5)
    cards = {card.name: card for card in viewer_web.get("/").context["cards"]}
    assert (cards["requests"].value, cards["requests"].previous, cards["requests"].change) == (
        "10",
        "5",
        "+100%",
    )


def test_the_overview_progress_bar_carries_the_jobs_progress(
    viewer_web: Client, world: dict[str, object]
) -> None:
    page = text(viewer_web.get("/"))
    assert '<progress max="100" value="37.0" data-job-id="ft-abc123"' in page


def test_a_stale_poller_is_marked_stale(viewer_web: Client, db: None) -> None:
    long_ago = timezone.now() - timedelta(hours=1)
    PollerHeartbeat.objects.create(name="poll_models", interval_seconds=60, last_success=long_ago)
    PollerHeartbeat.objects.create(name="poll_batches", interval_seconds=60, last_success=timezone.now())
    page = text(viewer_web.get("/"))
    assert '<tr class="poller-stale">' in page and '<tr class="poller-ok">' in page


def test_the_overview_warns_when_the_proxy_dropped_logs(viewer_web: Client) -> None:
    assert "The proxy dropped" not in text(viewer_web.get("/"))
    cache.set(DROPPED_CACHE_KEY, 42)
    assert "The proxy dropped 42 request logs" in text(viewer_web.get("/"))


def test_the_overview_lists_firing_alerts(viewer_web: Client, world: dict[str, object]) -> None:
    from together_dash.alerts.models import Alert, AlertRule

    assert "Nothing is firing." in text(viewer_web.get("/"))
    rule, _ = AlertRule.objects.get_or_create(kind="billing")
    key_page = reverse("dashboard-key", args=[world["key"].id])
    Alert.objects.create(
        rule=rule,
        subject="key:prod",
        label="prod",
        state=Alert.State.FIRING,
        fired_at=timezone.now(),
        context={"path": key_page, "detail": "HTTP 402 since 06:12"},
    )
    Alert.objects.create(rule=rule, subject="key:old", label="old", state=Alert.State.RESOLVED)

    page = text(viewer_web.get("/"))

    assert f'<a href="{key_page}">prod</a>' in page and "HTTP 402 since 06:12" in page
    assert ">old<" not in page and "Nothing is firing." not in page


def test_without_the_alerts_app_there_is_no_alerts_section(viewer_web: Client) -> None:
    with modify_settings(INSTALLED_APPS={"remove": ["together_dash.alerts"]}):
        response = viewer_web.get("/")
    assert response.context["firing_alerts"] is None
    assert "Firing alerts" not in text(response)


def test_the_overview_filters_figures_by_model_and_key(viewer_web: Client, seed: Seed) -> None:
    prod, other = seed.key("prod"), seed.key("other")
    seed.logs(prod, LLAMA, timedelta(minutes=5), 4)
    seed.logs(other, QWEN, timedelta(minutes=5), 2)
    by_model = {c.name: c.value for c in viewer_web.get("/", {"model": QWEN}).context["cards"]}
    by_key = {c.name: c.value for c in viewer_web.get("/", {"key": prod.id}).context["cards"]}
    assert (by_model["requests"], by_key["requests"]) == ("2", "4")


def test_an_unusable_range_is_explained_not_an_error(viewer_web: Client) -> None:
    response = viewer_web.get(
        "/", {"range": "custom", "start": "2026-03-02T00:00", "end": "2026-03-01T00:00"}
    )
    assert response.status_code == 200
    assert "must be before its end" in text(response)


def test_error_groups_filter_by_category_and_sort_by_count(viewer_web: Client, seed: Seed) -> None:
    key = seed.key()
    seed.logs(key, LLAMA, timedelta(minutes=5), 2, kind="request_rate_limited")
    seed.logs(key, LLAMA, timedelta(minutes=5), 5, kind="model_overloaded")
    seed.logs(key, LLAMA, timedelta(minutes=5), 1, kind="insufficient_credits")

    by_count = viewer_web.get(reverse("dashboard-errors"), {"sort": "count"}).context["page"].object_list
    billing = viewer_web.get(reverse("dashboard-errors"), {"category": "billing"}).context["page"].object_list

    assert [group.kind for group in by_count] == [
        "model_overloaded",
        "request_rate_limited",
        "insufficient_credits",
    ]
    assert [group.kind for group in billing] == ["insufficient_credits"]


def test_resolved_groups_show_only_when_asked_for(viewer_web: Client, seed: Seed) -> None:
    seed.logs(seed.key(), LLAMA, timedelta(minutes=5), 1, kind="model_overloaded")
    ErrorGroup.objects.get().resolve()
    assert not viewer_web.get(reverse("dashboard-errors")).context["page"].object_list
    assert len(viewer_web.get(reverse("dashboard-errors"), {"state": "all"}).context["page"].object_list) == 1


def test_the_error_list_says_what_to_do_when_empty(viewer_web: Client) -> None:
    assert "No open error group matches these filters" in text(viewer_web.get(reverse("dashboard-errors")))


def test_an_error_group_shows_its_cause_fix_occurrences_and_successor(viewer_web: Client, seed: Seed) -> None:
    seed.model("meta-llama/Llama-3-70b-chat-hf", state=ModelInfo.State.REMOVED, successor=LLAMA)
    seed.logs(seed.key(), "meta-llama/Llama-3-70b-chat-hf", timedelta(minutes=5), 3, kind="model_not_found")
    group = ErrorGroup.objects.get()

    response = viewer_web.get(reverse("dashboard-error", args=[group.id]))
    page = text(response)

    info = TAXONOMY["model_not_found"]
    assert info.fix in page and info.cause in page and "not retryable" in page
    assert f"Try instead:</strong> <code>{LLAMA}</code>" in page
    assert sum(response.context["occurrence_chart"]["counts"]) == 3
    assert len(response.context["recent"]) == 3 and "simulated model_not_found" in page


def test_an_unknown_error_group_is_a_404(viewer_web: Client) -> None:
    assert viewer_web.get(reverse("dashboard-error", args=[999])).status_code == 404


def test_the_request_explorer_pages_by_keyset_and_filters(viewer_web: Client, seed: Seed) -> None:
    key = seed.key()
    seed.logs(key, LLAMA, timedelta(minutes=5), 60)
    seed.logs(key, LLAMA, timedelta(minutes=50), 2, kind="insufficient_credits")

    first = viewer_web.get(reverse("dashboard-requests"))
    older = viewer_web.get(reverse("dashboard-requests"), {"older_than": first.context["page"].older})
    billing = viewer_web.get(reverse("dashboard-requests"), {"category": "billing", "status": "402"})

    assert len(first.context["page"].rows) == 50 and first.context["page"].newer is None
    assert len(older.context["page"].rows) == 12 and older.context["page"].older is None
    assert {log.status_code for log in billing.context["page"].rows} == {402}
    assert len(billing.context["page"].rows) == 2
    assert "Older →" in text(first) and "← Newer" in text(older)


def test_the_csv_link_carries_the_same_filters(viewer_web: Client, seed: Seed) -> None:
    key = seed.key()
    seed.logs(key, LLAMA, timedelta(minutes=5), 3, kind="insufficient_credits")
    seed.logs(key, QWEN, timedelta(minutes=5), 2)
    response = viewer_web.get(
        reverse("dashboard-requests"), {"category": "billing", "key": key.id, "model": LLAMA}
    )

    export = viewer_web.get(response.context["csv_url"])
    lines = b"".join(export.streaming_content).decode().strip().splitlines()

    assert export.status_code == 200
    assert len(lines) == 1 + 3 and all(",billing," in line for line in lines[1:])


def test_a_broken_cursor_is_explained_and_the_first_page_shown(viewer_web: Client, seed: Seed) -> None:
    seed.logs(seed.key(), LLAMA, timedelta(minutes=5), 2)
    response = viewer_web.get(reverse("dashboard-requests"), {"older_than": "not-a-cursor"})
    assert "cursor is not valid" in text(response) and len(response.context["page"].rows) == 2


def test_the_request_explorer_names_keys_and_links_error_groups(viewer_web: Client, seed: Seed) -> None:
    seed.logs(seed.key("prod"), LLAMA, timedelta(minutes=5), 1, kind="model_overloaded")
    seed.logs(None, LLAMA, timedelta(minutes=5), 1)
    page = text(viewer_web.get(reverse("dashboard-requests"), {"range": "1h"}))
    group = ErrorGroup.objects.get()
    assert "<td>prod</td>" in page and "<td>–</td>" in page
    assert f'href="{reverse("dashboard-error", args=[group.id])}"' in page


def test_a_request_page_shows_every_captured_field_and_the_fix(viewer_web: Client, seed: Seed) -> None:
    seed.logs(seed.key("prod"), LLAMA, timedelta(minutes=5), 1, kind="insufficient_credits")
    log = RequestLog.objects.get()
    RequestLog.objects.filter(pk=log.pk).update(
        model_served="meta-llama/Llama-3.3-70B-Instruct-Turbo-Free", request_id="req-abc",
        ratelimit_limit=600, ratelimit_remaining=17, ratelimit_reset=4.5,
    )

    listing = text(viewer_web.get(reverse("dashboard-requests"), {"range": "1h"}))
    page = text(viewer_web.get(reverse("dashboard-request", args=[log.id])))

    assert f'href="{reverse("dashboard-request", args=[log.id])}"' in listing
    assert TAXONOMY["insufficient_credits"].fix in page
    assert "req-abc" in page and "redirected" in page and "prod" in page
    assert "17 left of 600, resets in 4.5 s" in page
    assert "Bodies are not kept for this request" in page


def test_a_request_page_shows_its_sampled_bodies(viewer_web: Client, db: None) -> None:
    record_entries([LogEntry(
        created_at=timezone.now(), endpoint="/v1/chat/completions", status_code=200,
        extra={"body_sample": {"request": '{"messages": "<b>hi</b>"}', "response": '{"id": "cmpl-1"}'}},
    )])
    log = RequestLog.objects.get()

    response = viewer_web.get(reverse("dashboard-request", args=[log.id]))

    assert response.context["sample"].request_log_id == log.id
    assert "&lt;b&gt;hi&lt;/b&gt;" in response.content.decode()  # shown as text, never as markup
    assert '"id": "cmpl-1"' in text(response)


def test_an_unknown_request_is_a_404_and_anonymous_visitors_log_in(viewer_web: Client,
                                                                   client: Client) -> None:
    assert viewer_web.get(reverse("dashboard-request", args=[999_999])).status_code == 404
    response = client.get(reverse("dashboard-request", args=[1]))
    assert response.status_code == 302 and "/login" in response["Location"]


def test_the_model_catalog_shows_prices_state_traffic_and_successors(viewer_web: Client, seed: Seed) -> None:
    seed.model(LLAMA)
    old = seed.model("meta-llama/Llama-3-70b-chat-hf", state=ModelInfo.State.REMOVED, successor=LLAMA)
    ModelChange.objects.create(model=old, kind=ModelChange.Kind.REMOVED)
    seed.logs(seed.key(), LLAMA, timedelta(minutes=5), 7)

    response = viewer_web.get(reverse("dashboard-models"))
    page = text(response)

    rows = {row.model.model_id: row for row in response.context["rows"]}
    assert rows[LLAMA].usage.requests == 7
    assert '<td class="num">0.88</td>' in page
    assert "state-removed" in page and f'<td class="model-id">{LLAMA}</td>' in page
    assert "Recent catalog changes" in page and "change-removed" in page


def test_the_model_catalog_filters_by_state(viewer_web: Client, seed: Seed) -> None:
    seed.model(LLAMA)
    seed.model(QWEN, state=ModelInfo.State.REMOVED)
    rows = viewer_web.get(reverse("dashboard-models"), {"state": "removed"}).context["rows"]
    assert [row.model.model_id for row in rows] == [QWEN]


def test_an_empty_catalog_says_how_to_fill_it(viewer_web: Client) -> None:
    assert "manage.py poll_models" in text(viewer_web.get(reverse("dashboard-models")))


def test_fine_tunes_list_progress_and_the_job_timeline(viewer_web: Client, seed: Seed) -> None:
    job = seed.finetune("ft-timeline", "running", (3, 12))
    FineTuneEvent.objects.create(
        job=job,
        created_at=seed.now - timedelta(minutes=9),
        type="JOB_START",
        type_normalized="job_start",
        message="Training started",
        digest="a",
    )
    FineTuneEvent.objects.create(
        job=job,
        created_at=seed.now - timedelta(minutes=3),
        level="error",
        type_normalized="checkpoint_error",
        message="Checkpoint upload failed",
        digest="b",
    )

    listing_page = text(viewer_web.get(reverse("dashboard-finetunes")))
    detail = text(viewer_web.get(reverse("dashboard-finetune", args=["ft-timeline"])))

    assert 'value="25.0" data-job-id="ft-timeline"' in listing_page
    assert detail.index("Training started") < detail.index("Checkpoint upload failed")
    assert '<li class="is-error">' in detail


def test_fine_tunes_filter_by_status(viewer_web: Client, seed: Seed) -> None:
    seed.finetune("ft-a", "running", (1, 2))
    seed.finetune("ft-b", "completed", (2, 2))
    jobs = viewer_web.get(reverse("dashboard-finetunes"), {"status": "completed"}).context["page"].object_list
    assert [job.job_id for job in jobs] == ["ft-b"]


def test_batches_offer_the_stored_remainder_for_download(viewer_web: Client, db: None) -> None:
    directory = remainder_dir()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "batch-402.jsonl").write_text('{"custom_id": "r2"}\n')
    BatchJob.objects.create(
        batch_id="batch-402",
        status="FAILED",
        error="Insufficient credits (402)",
        progress=40.0,
        failed_count=1,
        remainder_count=1,
        remainder_file="batch-402.jsonl",
        files_state="done",
        failed_sample=[{"custom_id": "r3", "message": "credits", "code": "402"}],
    )

    page = text(viewer_web.get(reverse("dashboard-batches")))
    download = viewer_web.get(reverse("dashboard-batch-remainder", args=["batch-402"]))

    assert "Download remainder" in page and "out of credits" in page
    assert 'value="40.0" data-job-id="batch-402"' in page
    assert download.status_code == 200
    assert b"".join(download.streaming_content) == b'{"custom_id": "r2"}\n'


def test_a_remainder_outside_its_folder_is_never_served(viewer_web: Client, db: None) -> None:
    BatchJob.objects.create(batch_id="batch-evil", status="FAILED", remainder_file="../secret_key")
    BatchJob.objects.create(batch_id="batch-none", status="COMPLETED")
    assert viewer_web.get(reverse("dashboard-batch-remainder", args=["batch-evil"])).status_code == 404
    assert viewer_web.get(reverse("dashboard-batch-remainder", args=["batch-none"])).status_code == 404


def test_key_usage_lists_keys_and_links_their_pages(viewer_web: Client, world: dict[str, object]) -> None:
    key = world["key"]
    response = viewer_web.get(reverse("dashboard-keys"))
    assert [row.usage.requests for row in response.context["rows"]] == [9]
    assert reverse("dashboard-key", args=[key.id]) in text(response)


def test_a_key_page_shows_its_health_headroom_usage_and_errors(
    viewer_web: Client, seed: Seed, world: dict[str, object]
) -> None:
    key = world["key"]
    seed.snapshot(key, LLAMA, 4.0, timedelta(minutes=1))
    response = viewer_web.get(reverse("dashboard-key", args=[key.id]))
    page = text(response)
    assert response.context["rng"].key_id == key.id
    assert "4% · critical" in page
    assert {c.name: c.value for c in response.context["cards"]}["requests"] == "9"
    assert TAXONOMY["request_rate_limited"].fix in page
    assert reverse("keys-upstream-detail", args=[key.id]) in page


def test_the_nav_links_every_dashboard_page(viewer_web: Client) -> None:
    page = text(viewer_web.get("/"))
    for name in (
        "dashboard-errors",
        "dashboard-requests",
        "dashboard-models",
        "dashboard-finetunes",
        "dashboard-batches",
        "dashboard-keys",
        "keys-list",
    ):
        assert f'href="{reverse(name)}"' in page, name


def test_an_unpriced_model_shows_its_badge_on_every_page_with_a_cost_never_zero(
    viewer_web: Client, seed: Seed
) -> None:
    key = seed.key("prod")
    seed.model(LLAMA)
    seed.model(QWEN, pricing_input=None, pricing_output=None)
    seed.logs(key, LLAMA, timedelta(minutes=5), 2)
    seed.logs(key, QWEN, timedelta(minutes=4), 3)
    unpriced = RequestLog.objects.filter(model_requested=QWEN).first()
    priced = RequestLog.objects.filter(model_requested=LLAMA).first()

    pages = {
        "overview": text(viewer_web.get(reverse("dashboard-overview"), {"range": "1h"})),
        "key": text(viewer_web.get(reverse("dashboard-key", args=[key.id]), {"range": "1h"})),
        "requests": text(viewer_web.get(reverse("dashboard-requests"), {"range": "1h"})),
        "request": text(viewer_web.get(reverse("dashboard-request", args=[unpriced.id]))),
        "models": text(viewer_web.get(reverse("dashboard-models"), {"range": "1h"})),
    }
    priced_page = text(viewer_web.get(reverse("dashboard-request", args=[priced.id])))

    for name in ("overview", "key"):
        assert "3 unpriced</span>" in pages[name], name
    assert pages["requests"].count('class="badge warn unpriced"') == 3
    assert "$0.00000" not in pages["requests"]
    assert 'class="badge warn unpriced"' in pages["request"]
    assert f"the catalog has no price for <span class=\"model-id\">{QWEN}</span>" in pages["request"]
    assert pages["models"].count('class="badge warn unpriced"') == 1
    assert "unpriced" not in priced_page and "$0.000106" in priced_page
