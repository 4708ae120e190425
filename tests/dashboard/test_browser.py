"""The dashboard in Debian's Chromium (Playwright), against a live server with data seeded by real services.

Screenshots of every page land in test-artifacts/dashboard/ (gitignored) for a human to look at.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.contrib.staticfiles.handlers import StaticFilesHandler
from django.core.servers.basehttp import WSGIServer
from django.db import connections
from django.test import Client
from django.test.testcases import LiveServerThread
from django.urls import reverse
from django.utils import timezone
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, sync_playwright

from together_dash.endpoints.polling import Listing, store_endpoints, store_hardware
from together_dash.jobs.models import FineTuneJob
from together_dash.together import types
from together_dash.together.errors import TAXONOMY
from together_dash.traffic.models import ErrorGroup

from .conftest import LLAMA, PASSWORD, QWEN, Seed

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(settings.BASE_DIR) / "test-artifacts" / "dashboard"
LAPTOP = {"width": 1366, "height": 900}
PHONE = {"width": 390, "height": 844}
# Seeded errors in the last 24 hours, per category label as the chart shows it.
SEEDED_ERRORS = {"Rate limit": 3, "Billing": 2, "Validation": 4, "Server": 6}



@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # Playwright's sync API runs an event loop in this thread; the ORM calls the tests make between
    # browser steps are ordinary synchronous code, which Django would otherwise refuse next to a loop.
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium package.")
    with mock.patch.dict(os.environ, {"DJANGO_ALLOW_ASYNC_UNSAFE": "true"}), sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield launched
        launched.close()


class SerialWSGIServer(WSGIServer):
    """Answers one request at a time; Django then closes each connection, so nothing queues behind one.

    With SQLite in memory the live server shares the test's single database connection, and the
    overview fires several requests at once: a threaded server would use that connection from
    several threads at the same time, which hangs now and then.
    """

    def __init__(self, *args: Any, connections_override: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)


class SerialLiveServerThread(LiveServerThread):
    server_class = SerialWSGIServer


@pytest.fixture(scope="module")
def live_url(django_db_setup: None) -> Iterator[str]:
    """A live server for this module, serving static files, on a free loopback port."""
    shared = {
        conn.alias: conn for conn in connections.all() if conn.vendor == "sqlite" and conn.is_in_memory_db()
    }
    thread = SerialLiveServerThread("127.0.0.1", StaticFilesHandler, connections_override=shared)
    thread.daemon = True
    for conn in shared.values():
        conn.inc_thread_sharing()
    thread.start()
    thread.is_ready.wait()
    if thread.error:
        raise thread.error
    yield f"http://127.0.0.1:{thread.port}"
    thread.terminate()
    for conn in shared.values():
        conn.dec_thread_sharing()


@pytest.fixture
def world(seed: Seed) -> dict[str, Any]:
    prod, batch = seed.key("prod"), seed.key("batch")
    seed.model(LLAMA)
    seed.model(QWEN)
    seed.logs(prod, LLAMA, timedelta(minutes=15), 20)
    seed.logs(prod, LLAMA, timedelta(minutes=12), 3, kind="request_rate_limited")
    seed.logs(prod, LLAMA, timedelta(minutes=40), 2, kind="insufficient_credits")
    seed.logs(batch, QWEN, timedelta(minutes=25), 4, kind="model_not_found")
    seed.logs(batch, QWEN, timedelta(hours=5), 6, kind="model_overloaded")
    seed.snapshot(prod, "", 64.0, timedelta(minutes=2))
    seed.snapshot(prod, LLAMA, 8.0, timedelta(minutes=3))
    seed.finetune("ft-7f3a", "running", (37, 100))
    seed.finetune("ft-done", "completed", (50, 50))
    return {"prod": prod, "batch": batch}


@pytest.fixture(autouse=True)
def _policy_lets_playwright_wait(settings: Any) -> None:
    """Playwright's wait_for_function evaluates a string in the page, which the Content-Security-Policy
    forbids; the rest of the policy stays, so an inline script or style of ours still fails a test."""
    strict = "script-src 'self';"
    assert strict in settings.CONTENT_SECURITY_POLICY
    settings.CONTENT_SECURITY_POLICY = settings.CONTENT_SECURITY_POLICY.replace(
        strict, "script-src 'self' 'unsafe-eval';"
    )


@pytest.fixture
def page_for(browser: Browser, live_url: str) -> Iterator[Any]:
    """Open a page (laptop-sized unless told) logged in as a user; fail the test on any console error."""
    contexts: list[BrowserContext] = []
    problems: list[str] = []

    def open_page(user: User | None = None, viewport: dict[str, int] = LAPTOP) -> Page:
        context = browser.new_context(viewport=viewport, base_url=live_url)
        if user is not None:
            context.add_cookies(
                [{"name": settings.SESSION_COOKIE_NAME, "value": _session_for(user), "url": live_url}]
            )
        contexts.append(context)
        page = context.new_page()
        page.on("console", lambda message: _note_error(message, problems))
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
        return page

    allowed: list[str] = []
    open_page.allow = allowed.append  # a console message the test expects (by a fragment of its text)
    yield open_page
    for context in contexts:
        context.close()
    assert [problem for problem in problems if not any(fragment in problem for fragment in allowed)] == []


def _session_for(user: User) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


def _note_error(message: ConsoleMessage, problems: list[str]) -> None:
    if message.type == "error":
        problems.append(f"console: {message.text}")


def shoot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def wait_for_refresh(page: Page, after: int = 0) -> None:
    page.wait_for_function(f"window.tdLoads > {after}", timeout=15_000)


def category_totals(page: Page) -> dict[str, int]:
    return page.evaluate(
        """() => Object.fromEntries(window.tdCharts.categories.data.datasets
             .map(set => [set.label, set.data.reduce((a, b) => a + b, 0)])
             .filter(([, total]) => total > 0))"""
    )


def test_logging_in_shows_the_overview_with_charts_of_the_real_data(
    page_for: Any, live_url: str, viewer: User, world: dict[str, Any]
) -> None:
    page = page_for()
    page.goto("/")
    assert reverse("login") in page.url
    page.fill("#id_username", viewer.username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_url}/")
    wait_for_refresh(page)

    assert category_totals(page) == SEEDED_ERRORS
    volume = page.evaluate(
        "() => window.tdCharts.volume.data.datasets.map(s => s.data.reduce((a, b) => a + b, 0))"
    )
    assert volume == [35, 15]
    bars = page.evaluate("() => window.tdCharts.quota.data.datasets[0].data")
    assert bars == [8.0, 64.0]
    assert page.locator("#quota-warnings li").first.inner_text().startswith(f"prod · {LLAMA}: 8%")
    statuses = page.evaluate("() => window.tdCharts.finetunes.data.labels")
    assert statuses == ["running", "completed"]
    assert page.locator('[data-figure="requests"] .value').inner_text() == "35"
    shoot(page, "overview")


def test_changing_a_filter_redraws_the_charts_and_keeps_the_url_shareable(
    page_for: Any, viewer: User, world: dict[str, Any]
) -> None:
    page = page_for(viewer)
    page.goto("/")
    wait_for_refresh(page)

    loads = page.evaluate("window.tdLoads")
    page.fill("input[name=model]", QWEN)
    page.press("input[name=model]", "Enter")
    wait_for_refresh(page, after=loads)
    assert category_totals(page) == {"Validation": 4, "Server": 6}
    assert page.locator('[data-figure="requests"] .value').inner_text() == "10"

    loads = page.evaluate("window.tdLoads")
    page.select_option("select[name=range]", "1h")
    wait_for_refresh(page, after=loads)
    assert category_totals(page) == {"Validation": 4}
    assert "range=1h" in page.url and "model=Qwen" in page.url
    shoot(page, "overview-filtered")


def test_an_error_group_shows_its_fix(page_for: Any, viewer: User, world: dict[str, Any]) -> None:
    group = ErrorGroup.objects.get(kind="insufficient_credits")
    page = page_for(viewer)
    page.goto(reverse("dashboard-errors"))
    page.click(f"a[href^='{reverse('dashboard-error', args=[group.id])}']")
    page.wait_for_selector("#fix-text")

    assert page.inner_text("#fix-text") == TAXONOMY["insufficient_credits"].fix
    occurrences = page.evaluate(
        "() => window.tdCharts.occurrences.data.datasets[0].data.reduce((a, b) => a + b, 0)"
    )
    assert occurrences == 2
    shoot(page, "error-group")


def test_a_fine_tune_progress_bar_matches_its_job(page_for: Any, viewer: User, world: dict[str, Any]) -> None:
    job = FineTuneJob.objects.get(job_id="ft-7f3a")
    page = page_for(viewer)
    for path in ("/", reverse("dashboard-finetunes")):
        page.goto(path)
        shown = page.locator(f"progress[data-job-id='{job.job_id}']").evaluate("bar => bar.value")
        assert shown == pytest.approx(job.progress_pct)
    shoot(page, "fine-tunes")


def test_a_viewer_sees_no_key_actions_and_cannot_use_them(
    page_for: Any, live_url: str, viewer: User, world: dict[str, Any]
) -> None:
    page = page_for(viewer)
    page.goto(reverse("keys-list"))
    body = page.inner_text("main")
    assert "prod" in body
    for action in ("Add a Together key", "Create an app key", "Rotate", "Revoke"):
        assert action not in body

    key = world["prod"]
    assert page.request.get(reverse("keys-upstream-new")).status == 403
    revoke = page.request.post(reverse("keys-upstream-revoke", args=[key.id]), max_redirects=0)
    assert revoke.status == 403
    shoot(page, "keys-as-viewer")


def test_every_page_renders_on_a_phone_without_console_errors(
    page_for: Any, viewer: User, world: dict[str, Any]
) -> None:
    group = ErrorGroup.objects.get(kind="model_not_found")
    endpoint = _idle_endpoint(world["prod"].id)
    pages = {
        "overview": "/",
        "errors": reverse("dashboard-errors"),
        "error-group": reverse("dashboard-error", args=[group.id]),
        "requests": reverse("dashboard-requests"),
        "models": reverse("dashboard-models"),
        "fine-tune": reverse("dashboard-finetune", args=["ft-7f3a"]),
        "batches": reverse("dashboard-batches"),
        "key-usage": reverse("dashboard-keys"),
        "key": reverse("dashboard-key", args=[world["prod"].id]),
        "runway": reverse("dashboard-runway"),
        "endpoints": reverse("endpoints-list"),
        "endpoint": reverse("endpoints-detail", args=[endpoint]),
    }
    page = page_for(viewer, viewport=PHONE)
    for name, path in pages.items():
        page.goto(path)
        if name in ("overview", "key"):
            wait_for_refresh(page)
        overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, f"{name} is wider than the phone screen by {overflow}px"
        shoot(page, f"phone-{name}")


def test_a_key_admin_enters_the_balance_and_the_overview_counts_down_from_it(
    page_for: Any, live_url: str, key_admin: User, world: dict[str, Any]
) -> None:
    page = page_for(key_admin)
    page.goto("/")
    wait_for_refresh(page)
    assert "No balance entered" in page.inner_text("#runway")
    page.click("#runway >> text=enter a balance")
    page.fill("#id_balance_usd", "-3")
    page_for.allow("status of 400")  # the refused form comes back as a 400, which Chromium logs
    page.click("text=Record the balance")
    assert "cannot be negative" in page.inner_text("#enter-balance")

    page.fill("#id_balance_usd", "50")
    page.click("text=Record the balance")
    page.wait_for_url(f"{live_url}{reverse('dashboard-runway')}")
    assert "$50.00" in page.inner_text("#balance-history")
    page.goto("/")
    wait_for_refresh(page)  # the panel is one of the sections a live refresh replaces

    # True as of this minute (the form's default): nothing spent since. The day's 20 requests of 120
    # tokens at $0.88 per million ($0.0021) are the burn rate.
    assert page.inner_text('#runway [data-value="spent"]').startswith("$0.00")
    assert page.inner_text('#runway [data-value="left"]') == "$50.00"
    assert page.inner_text('#runway [data-value="burn"]').startswith("< $0.01 per hour")
    assert "days" in page.inner_text('#runway [data-value="hours"]')
    shoot(page, "overview-runway")


def _idle_endpoint(key_id: int) -> str:
    """A STARTED dedicated endpoint with no timeout on priced hardware, stored as the poller stores one."""
    now = timezone.now()
    a100 = types.Hardware("1x_nvidia_a100_80gb_sxm", Decimal("4.27"), "a100-80gb", "sxm", 80, 1)
    store_hardware([a100], now)
    listed = types.DedicatedEndpoint(
        id="endpoint-0b7e", name="acme/Llama-3.3-70B-Instruct-Turbo-0b7e", model=LLAMA,
        hardware="1x_nvidia_a100_80gb_sxm", state="STARTED", display_name="Support bot", min_replicas=1,
        max_replicas=2,
    )
    store_endpoints({key_id: Listing([listed], [])}, now - timedelta(hours=2))
    return listed.id


def test_a_key_admin_adds_a_budget_and_a_viewer_sees_its_bar_on_a_phone(
    page_for: Any, viewer: User, key_admin: User, world: dict[str, Any]
) -> None:
    admin = page_for(key_admin)
    admin.goto(reverse("budgets-new"))
    admin.fill("#id_name", "prod-daily")
    admin.select_option("#id_scope", "upstream_key")
    admin.select_option("#id_upstream_key", str(world["prod"].id))
    admin.select_option("#id_period", "day")
    admin.fill("#id_amount_usd", "0.0001")
    admin.fill("#id_thresholds", "50, 100")
    admin.click("text=Add the budget")
    admin.wait_for_url("**/budgets/")
    assert "Budget prod-daily created." in admin.inner_text(".messages")

    page = page_for(viewer, viewport=PHONE)
    page.goto(reverse("budgets-list"))
    row = page.locator('tr[data-budget="prod-daily"]')
    assert row.locator("meter").get_attribute("value") == "100"  # the seeded traffic is over the amount
    assert "over" in row.inner_text() and "upstream key prod" in row.inner_text()
    assert page.locator("text=Add a budget").count() == 0
    overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 1, f"the budgets page is wider than the phone screen by {overflow}px"
    shoot(page, "phone-budgets")


def test_an_empty_overview_says_what_to_do_instead_of_blank_charts(page_for: Any, viewer: User) -> None:
    page = page_for(viewer)
    page.goto("/")
    wait_for_refresh(page)
    assert page.locator("[data-empty-for=categories]").is_visible()
    assert page.locator("[data-chart-box=categories]").is_hidden()
    assert "create_app_key" in page.inner_text("#getting-started")
    shoot(page, "overview-empty")


def test_the_charts_say_so_when_the_session_has_ended(
    page_for: Any, viewer: User, world: dict[str, Any]
) -> None:
    page = page_for(viewer)
    page.goto("/")
    wait_for_refresh(page)
    # Chromium itself logs every refused fetch; those are expected here, script errors still are not.
    page_for.allow("the server responded with a status of 401 (Unauthorized)")
    page.context.clear_cookies()
    page.evaluate("document.querySelector('form[data-live]').requestSubmit()")
    page.wait_for_function(
        "document.getElementById('refresh-status').textContent.includes('session has ended')"
    )
    # The charts keep the last data they had rather than going blank.
    assert category_totals(page) == SEEDED_ERRORS


def test_pages_use_chart_js_from_static_files_not_a_cdn(page_for: Any, live_url: str, viewer: User) -> None:
    page = page_for(viewer)
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto("/")
    wait_for_refresh(page)
    assert f"{live_url}/static/vendor/chart.js/chart.umd.min.js" in requested
    hosts = {urlsplit(url).netloc for url in requested if url.startswith("http")}
    assert hosts == {urlsplit(live_url).netloc}
