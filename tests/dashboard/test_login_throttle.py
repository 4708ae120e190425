from __future__ import annotations

import time

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from together_dash.dashboard import login as throttle

from .conftest import PASSWORD

LOGIN = reverse("login")


def attempt(client: Client, username: str, password: str, address: str = "10.0.0.1") -> int:
    return client.post(LOGIN, {"username": username, "password": password}, REMOTE_ADDR=address).status_code


def fail(client: Client, username: str, times: int, address: str = "10.0.0.1") -> list[int]:
    return [attempt(client, username, "wrong password", address) for _ in range(times)]


def test_a_good_password_logs_in(client: Client, viewer: User) -> None:
    assert attempt(client, viewer.username, PASSWORD) == 302


def test_after_five_failures_even_the_right_password_is_refused(client: Client, viewer: User) -> None:
    assert fail(client, viewer.username, throttle.FAILURES_PER_USERNAME) == [200] * 5

    response = client.post(LOGIN, {"username": viewer.username, "password": PASSWORD}, REMOTE_ADDR="10.0.0.1")

    assert response.status_code == 429
    assert response["Retry-After"] == str(throttle.WINDOW_SECONDS)
    assert "Too many failed attempts" in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_the_block_is_per_username_and_address(client: Client, viewer: User, key_admin: User) -> None:
    fail(client, viewer.username, throttle.FAILURES_PER_USERNAME)
    assert attempt(client, viewer.username.upper(), PASSWORD) == 429  # usernames compare case-insensitively
    assert attempt(Client(), viewer.username, PASSWORD, address="10.0.0.2") == 302
    assert attempt(Client(), key_admin.username, PASSWORD) == 302


def test_the_block_ends_after_the_window(
    client: Client, viewer: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The window is the cache entry's lifetime, which Redis enforces in real time (time travel can't
    # move it), so the test uses a one-second window and waits it out.
    monkeypatch.setattr(throttle, "WINDOW_SECONDS", 1)
    fail(client, viewer.username, throttle.FAILURES_PER_USERNAME)
    assert attempt(client, viewer.username, PASSWORD) == 429
    time.sleep(1.6)  # the one-second window must pass in real time (see above)
    assert attempt(client, viewer.username, PASSWORD) == 302


def test_a_successful_login_forgets_earlier_failures(client: Client, viewer: User) -> None:
    fail(client, viewer.username, throttle.FAILURES_PER_USERNAME - 1)
    assert attempt(client, viewer.username, PASSWORD) == 302
    client.logout()
    assert fail(Client(), viewer.username, throttle.FAILURES_PER_USERNAME - 1) == [200] * 4
    assert attempt(Client(), viewer.username, PASSWORD) == 302


def test_many_usernames_from_one_address_are_blocked_too(client: Client, viewer: User) -> None:
    for number in range(throttle.FAILURES_PER_ADDRESS):
        fail(client, f"guess-{number}", 1, address="10.9.9.9")
    assert attempt(client, viewer.username, PASSWORD, address="10.9.9.9") == 429
    assert attempt(Client(), viewer.username, PASSWORD, address="10.0.0.3") == 302


@pytest.mark.parametrize("address", ["10.0.0.1", ""])
def test_blocked_attempts_do_not_check_the_password(
    client: Client, viewer: User, address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fail(client, viewer.username, throttle.FAILURES_PER_USERNAME, address)
    checked: list[str] = []
    monkeypatch.setattr(User, "check_password", lambda self, raw: checked.append(raw) or True)
    assert attempt(client, viewer.username, PASSWORD, address) == 429
    assert checked == []


def test_the_admin_login_shares_the_throttle(client: Client, db: None, fast_passwords: None) -> None:
    User.objects.create_superuser("root", "root@example.com", PASSWORD)
    fail(client, "root", throttle.FAILURES_PER_USERNAME)

    blocked = client.post(
        reverse("admin:login"), {"username": "root", "password": PASSWORD}, REMOTE_ADDR="10.0.0.1"
    )

    assert blocked.status_code == 200 and "Too many failed attempts" in blocked.content.decode()
    assert "_auth_user_id" not in client.session
    assert attempt(Client(), "root", PASSWORD, address="10.0.0.2") == 302
