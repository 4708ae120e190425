"""check_connectivity against the simulator: a good key, a rejected key, and unreachable upstreams."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from together_dash.keys.models import TogetherKey
from together_dash.pollers.testing import new_secret
from together_dash.simulator.testing import RunningSimulator

pytestmark = pytest.mark.django_db


@pytest.fixture
def good_secret(simulator: RunningSimulator, settings: object) -> Iterator[str]:
    """The simulator accepts exactly one key; TOGETHER_BASE_URL points at it."""
    secret = new_secret()
    simulator.reset(keys=[secret])
    settings.TOGETHER_BASE_URL = simulator.base_url
    yield secret
    simulator.reset()


def _run(*args: str) -> tuple[int, str]:
    out = StringIO()
    try:
        call_command("check_connectivity", *args, stdout=out)
    except SystemExit as exc:
        return int(exc.code), out.getvalue()
    return 0, out.getvalue()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nothing listens there once the socket is closed


def test_a_good_key_is_ok_and_the_exit_code_is_0(good_secret: str) -> None:
    TogetherKey.create("prod", good_secret)
    code, out = _run("--json")
    report = json.loads(out)
    assert code == 0 and report["exit_code"] == 0
    assert report["dns"]["ok"] is True and "127.0.0.1" in report["dns"]["detail"]
    assert report["tls"] == {"ok": None, "detail": "skipped (http)", "ms": None}
    (key,) = report["keys"]
    assert (key["name"], key["last_four"], key["verdict"]) == ("prod", good_secret[-4:], "ok")
    assert key["models"]["ok"] and key["models"]["detail"].startswith("GET /models: 200")
    assert key["models"]["ms"] >= 0
    assert key["whoami"]["ok"] and key["whoami"]["detail"].startswith("GET /whoami")
    assert key["ratelimit"]["request_limit"] > 0  # the simulator's x-ratelimit-limit on /models


def test_a_rejected_key_is_auth_failed_and_the_exit_code_is_1(good_secret: str) -> None:
    rejected = new_secret()
    TogetherKey.create("prod", good_secret)
    TogetherKey.create("stale", rejected)
    code, out = _run()
    assert code == 1
    assert "key prod (…" in out and f"key stale (…{rejected[-4:]}): auth_failed" in out
    assert "401 (invalid_api_key) Invalid API key provided" in out
    assert rejected not in out and good_secret not in out and rejected[:12] not in out


def test_a_revoked_key_is_skipped_unless_named(good_secret: str) -> None:
    TogetherKey.create("prod", good_secret)
    TogetherKey.objects.create(name="old", secret_encrypted="x", last_four="abcd", status="revoked")
    assert _run()[0] == 0
    code, out = _run("--key", "prod", "--json")
    assert code == 0 and [k["name"] for k in json.loads(out)["keys"]] == ["prod"]
    with pytest.raises(CommandError, match="No Together key named"):
        call_command("check_connectivity", "--key", "nobody", stdout=StringIO())


def test_a_key_whose_secret_cannot_be_decrypted_is_reported_not_crashed(good_secret: str) -> None:
    TogetherKey.objects.create(name="garbled", secret_encrypted="not-a-fernet-token", last_four="wxyz")
    code, out = _run()
    assert code == 1 and "garbled (…wxyz): auth_failed" in out and "cannot be decrypted" in out


def test_an_upstream_nobody_answers_on_is_unreachable_and_the_exit_code_is_2(
    good_secret: str, settings: object
) -> None:
    settings.TOGETHER_BASE_URL = f"http://127.0.0.1:{_closed_port()}/v1"
    TogetherKey.create("prod", good_secret)
    TogetherKey.create("other", new_secret())
    code, out = _run("--json", "--timeout", "2")
    report = json.loads(out)
    assert code == 2
    assert [key["verdict"] for key in report["keys"]] == ["unreachable", "unreachable"]
    assert "connection_error" in report["keys"][0]["models"]["detail"]


def test_a_name_that_does_not_resolve_fails_at_dns(good_secret: str, settings: object) -> None:
    settings.TOGETHER_BASE_URL = "https://together-dash-test.invalid/v1"
    TogetherKey.create("prod", good_secret)
    code, out = _run("--timeout", "3")
    assert code == 2
    assert "DNS  FAIL together-dash-test.invalid" in out and "prod (…" in out and "unreachable" in out


def test_tls_is_checked_for_https_and_a_failed_handshake_is_unreachable(
    good_secret: str, simulator: RunningSimulator, settings: object
) -> None:
    # The simulator speaks plain HTTP: a TLS handshake with it must fail.
    settings.TOGETHER_BASE_URL = f"https://127.0.0.1:{simulator.port}/v1"
    TogetherKey.create("prod", good_secret)
    code, out = _run("--json", "--timeout", "3")
    report = json.loads(out)
    assert code == 2
    assert report["tls"]["ok"] is False
    assert report["keys"][0]["verdict"] == "unreachable"


def test_with_no_key_it_says_so_and_exits_1(good_secret: str) -> None:
    code, out = _run()
    assert code == 1 and "No Together key to check" in out
