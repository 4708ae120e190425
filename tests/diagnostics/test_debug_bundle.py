"""debug_bundle: every section present, keys by last four only, no secret (or 12 characters of one)."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from datetime import timedelta
from io import BytesIO, StringIO
from pathlib import Path

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from together_dash.catalog.polling import poll_models
from together_dash.core.roles import KEY_ADMIN_GROUP, VIEWER_GROUP
from together_dash.diagnostics.bundle import Scrubber
from together_dash.keys import crypto
from together_dash.keys.health import check_keys
from together_dash.keys.models import AppKey, TogetherKey
from together_dash.keys.rate_limits import poll_rate_limits
from together_dash.pollers.testing import new_secret
from together_dash.simulator.testing import RunningSimulator
from together_dash.traffic.models import ErrorGroup, RequestLog

pytestmark = pytest.mark.django_db

WINDOW = 12
SECTIONS = {
    "README.txt",
    "versions.json",
    "settings.json",
    "connectivity.json",
    "keys.json",
    "rate_limits.json",
    "error_groups.json",
    "request_logs.json",
    "pollers.json",
    "catalog.json",
}


@pytest.fixture
def installation(simulator: RunningSimulator, settings: object) -> Iterator[dict[str, str]]:
    """Fresh secrets (one key rejected, one rotated in grace), polled data, logs and errors."""
    secrets = {name: new_secret() for name in ("good", "rejected", "previous", "env", "app")}
    simulator.reset(keys=[secrets["good"], secrets["previous"]])
    settings.TOGETHER_BASE_URL = simulator.base_url
    settings.TOGETHER_API_KEY = secrets["env"]
    good = TogetherKey.create("prod", secrets["good"])
    good.previous_secret_encrypted = crypto.encrypt(secrets["previous"])
    good.previous_last_four = secrets["previous"][-4:]
    good.previous_valid_until = timezone.now() + timedelta(hours=1)
    good.save()
    TogetherKey.create("stale", secrets["rejected"])
    app = AppKey(name="web", upstream_key=good)
    secrets["app"] = app.issue()
    app.save()
    poll_models()
    check_keys()
    poll_rate_limits()
    _traffic(good, secrets)
    yield secrets
    simulator.reset()


def _traffic(key: TogetherKey, secrets: dict[str, str]) -> None:
    """Rows whose stored text holds secrets whole and cut in half, as a truncating writer might leave them."""
    now = timezone.now()
    leaky = f"upstream said: bad key {secrets['rejected']} and …{secrets['good'][7:]}"
    group = ErrorGroup.objects.create(
        fingerprint="f" * 40,
        category="auth",
        kind="invalid_api_key",
        first_seen=now,
        last_seen=now,
        count=3,
        last_message=leaky,
        last_status=401,
        upstream_key=key,
    )
    for status in (200, 401):
        RequestLog.objects.create(
            endpoint="/v1/chat/completions",
            model_requested="meta-llama/Llama-3.3-70B-Instruct-Turbo",
            status_code=status,
            latency_ms=12.5,
            upstream_key=key,
            request_id=f"req-{status}",
            category="" if status == 200 else "auth",
            error_message="" if status == 200 else leaky,
            error_group=group if status == 401 else None,
        )


def _bundle(tmp_path: Path, *options: str) -> dict[str, str]:
    target = tmp_path / "bundle.zip"
    out = StringIO()
    call_command("debug_bundle", "-o", str(target), *options, stdout=out)
    assert str(target) in out.getvalue()
    with zipfile.ZipFile(target) as archive:
        return {name: archive.read(name).decode() for name in archive.namelist()}


def _leaks(text: str, secrets: dict[str, str]) -> set[str]:
    found = set()
    for label, whole in secrets.items():
        hidden = whole.split("_", 2)[2] if label == "app" else whole  # tdk_<prefix>_ is public by design
        if any(hidden[i : i + WINDOW] in text for i in range(len(hidden) - WINDOW + 1)):
            found.add(label)
    return found


def test_the_bundle_holds_every_section_and_no_secret(installation: dict[str, str], tmp_path: Path) -> None:
    files = _bundle(tmp_path, "--include-bodies")
    assert set(files) == SECTIONS
    for name, text in files.items():
        assert not _leaks(text, installation), f"secret in {name}"
    # The leaky rows really were in the bundle, redacted.
    assert "upstream said: bad key [redacted]" in files["error_groups.json"]
    assert "upstream said" in files["request_logs.json"]


def test_keys_appear_by_name_and_last_four_with_their_health(
    installation: dict[str, str], tmp_path: Path
) -> None:
    keys = json.loads(_bundle(tmp_path)["keys.json"])
    by_name = {key["name"]: key for key in keys["upstream_keys"]}
    assert by_name["prod"]["last_four"] == installation["good"][-4:]
    assert (by_name["prod"]["health"], by_name["stale"]["health"]) == ("healthy", "invalid")
    assert by_name["prod"]["in_grace"] is True
    assert keys["app_keys"][0]["prefix"] == installation["app"].split("_")[1]


def test_connectivity_in_the_bundle_tells_the_good_key_from_the_rejected_one(
    installation: dict[str, str], tmp_path: Path
) -> None:
    report = json.loads(_bundle(tmp_path)["connectivity.json"])
    verdicts = {key["name"]: key["verdict"] for key in report["keys"]}
    assert verdicts == {"prod": "ok", "stale": "auth_failed"} and report["exit_code"] == 1
    assert "401 (invalid_api_key) Invalid API key provided" in report["text"]  # redacted, not mangled


def test_the_other_sections_carry_the_installation_s_state(
    installation: dict[str, str], tmp_path: Path
) -> None:
    files = _bundle(tmp_path, "--skip-connectivity")
    settings_summary = json.loads(files["settings.json"])
    assert settings_summary["together_api_key_set"] is True and "TOGETHER_BASE_URL" in settings_summary
    assert json.loads(files["versions.json"])["packages"]["django"]
    assert json.loads(files["catalog.json"])["models"] > 10
    assert {beat["name"] for beat in json.loads(files["pollers.json"])} >= {"poll_models", "poll_rate_limits"}
    assert json.loads(files["rate_limits.json"])[0]["key"] in {"prod", "stale"}
    assert json.loads(files["error_groups.json"])[0]["count"] == 3
    assert "skipped" in json.loads(files["connectivity.json"])


def test_request_logs_carry_no_message_text_unless_opted_in(
    installation: dict[str, str], tmp_path: Path
) -> None:
    logs = json.loads(_bundle(tmp_path, "--skip-connectivity")["request_logs.json"])
    assert {log["status_code"] for log in logs} == {200, 401}
    assert all("error_message" not in log for log in logs)
    opted_in = json.loads(_bundle(tmp_path, "--skip-connectivity", "--include-bodies")["request_logs.json"])
    assert any(log.get("error_message", "").startswith("upstream said") for log in opted_in)


def test_the_scrubber_hides_a_fragment_of_a_known_secret() -> None:
    secret = new_secret()
    scrub = Scrubber([secret])
    text = scrub.text(f"cut: …{secret[-15:]} whole: {secret} fine: {secret[-4:]}")
    assert secret[-12:] not in text and secret not in text
    assert text.endswith(f"fine: {secret[-4:]}")


# ---- the admin download ------------------------------------------------------------------------------


def _login(group: str | None, **flags: bool) -> Client:
    user = User.objects.create_user(username=f"u-{group}-{len(flags)}", **flags)
    if group:
        user.groups.add(Group.objects.get_or_create(name=group)[0])
    client = Client()
    client.force_login(user)
    return client


def test_a_key_admin_downloads_the_bundle(installation: dict[str, str]) -> None:
    response = _login(KEY_ADMIN_GROUP).post(reverse("diagnostics-debug-bundle"))
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    assert 'attachment; filename="together-dash-debug-' in response["Content-Disposition"]
    with zipfile.ZipFile(BytesIO(response.content)) as archive:
        assert set(archive.namelist()) == SECTIONS
        assert not any(_leaks(archive.read(name).decode(), installation) for name in archive.namelist())


def test_only_key_admins_may_download_it_and_only_by_post(db: None) -> None:
    url = reverse("diagnostics-debug-bundle")
    assert _login(VIEWER_GROUP).post(url).status_code == 403
    assert Client().post(url).status_code == 302  # to the login page
    assert _login(KEY_ADMIN_GROUP).get(url).status_code == 405


def test_the_admin_index_offers_the_download_to_staff(db: None) -> None:
    page = _login(None, is_staff=True, is_superuser=True).get(reverse("admin:index"))
    assert page.status_code == 200
    assert "Download debug bundle" in page.content.decode()
    assert reverse("diagnostics-debug-bundle") in page.content.decode()
