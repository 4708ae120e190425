from __future__ import annotations

from pathlib import Path

from django.core.checks import run_checks
from django.test import override_settings


def _ids() -> set[str]:
    return {message.id for message in run_checks(include_deployment_checks=True)}


@override_settings(DEBUG=False, SECRET_KEY_FROM_ENV=False)
def test_it_refuses_production_without_a_secret_key() -> None:
    assert "together_dash.E001" in _ids()


@override_settings(DEBUG=False, FIELD_ENCRYPTION_KEYS_FROM_ENV=False)
def test_it_refuses_production_without_encryption_keys() -> None:
    assert "together_dash.E002" in _ids()


@override_settings(FIELD_ENCRYPTION_KEYS=["not-a-fernet-key"])
def test_it_reports_a_malformed_encryption_key() -> None:
    assert "together_dash.E003" in _ids()


@override_settings(TOGETHER_BASE_URL="api.together.xyz/v1")
def test_it_reports_a_relative_upstream_url() -> None:
    assert "together_dash.E004" in _ids()


@override_settings(PROXY_UPSTREAM_TRANSPORT="aiohtp")
def test_it_reports_an_unknown_upstream_transport() -> None:
    assert "together_dash.E005" in _ids()


@override_settings(
    DEBUG=False, EMAIL_BACKEND="django.core.mail.backends.console.EmailBackend", ALERT_EMAILS=[]
)
def test_it_warns_when_alerts_cannot_reach_anyone() -> None:
    ids = _ids()
    assert {"together_dash.W001", "together_dash.W002"} <= ids


@override_settings(DEBUG=False, METRICS_TOKEN="")
def test_it_warns_that_prometheus_cannot_scrape_without_a_metrics_token() -> None:
    assert "together_dash.W003" in _ids()


@override_settings(DEBUG=False, METRICS_TOKEN="a-long-random-metrics-token")
def test_a_metrics_token_silences_the_warning() -> None:
    assert "together_dash.W003" not in _ids()


def test_it_reports_a_multiprocess_folder_that_is_a_file(tmp_path: Path) -> None:
    file = tmp_path / "prometheus"
    file.write_text("")

    with override_settings(METRICS_MULTIPROC_DIR=str(file)):
        assert "together_dash.E006" in _ids()
    with override_settings(METRICS_MULTIPROC_DIR=str(tmp_path / "not-yet-there")):
        assert "together_dash.E006" not in _ids()


@override_settings(DEBUG=True)  # pytest-django runs tests with DEBUG off
def test_development_defaults_pass_every_check() -> None:
    problems = [m for m in run_checks() if m.id.startswith("together_dash.")]
    assert problems == []


@override_settings(OIDC_ISSUER="https://sso.example.com", OIDC_CLIENT_ID="dash", OIDC_CLIENT_SECRET="")
def test_it_warns_about_half_configured_single_sign_on() -> None:
    (message,) = [m for m in run_checks() if m.id == "together_dash.W010"]
    assert "OIDC_ISSUER, OIDC_CLIENT_ID set but OIDC_CLIENT_SECRET missing" in message.msg


def test_single_sign_on_left_unset_raises_nothing() -> None:
    sso_ids = {"together_dash.W010", "together_dash.W011", "together_dash.E010", "together_dash.E011"}
    assert not sso_ids & _ids()


@override_settings(OIDC_ISSUER="sso.example.com", OIDC_CLIENT_ID="dash", OIDC_CLIENT_SECRET="s")
def test_it_reports_a_relative_issuer() -> None:
    assert "together_dash.E010" in _ids()


@override_settings(OIDC_ENABLED=True, OIDC_VIEWER_GROUPS=[], OIDC_KEY_ADMIN_GROUPS=[])
def test_it_warns_when_no_group_grants_a_role() -> None:
    assert "together_dash.W011" in _ids()


@override_settings(PASSWORD_LOGIN=False, OIDC_ENABLED=False)
def test_it_refuses_to_leave_nobody_a_way_to_sign_in() -> None:
    assert "together_dash.E011" in _ids()
