"""Fixtures for the key tests: a Together simulator that accepts only the keys a test made, and the roles."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client

from together_dash.core.roles import KEY_ADMIN_GROUP, VIEWER_GROUP
from together_dash.simulator.testing import RunningSimulator


def new_secret() -> str:
    """A fresh random secret; no realistic key is ever written into the repository."""
    # No known key shape on purpose, so no pattern-based redaction can hide a leak from the tests.
    return secrets.token_urlsafe(30)


class Together:
    """The simulator as seen by one test: it accepts exactly the secrets the test asked for."""

    def __init__(self, simulator: RunningSimulator) -> None:
        self.simulator = simulator
        self.base_url = simulator.base_url
        self.accepted: list[str] = []

    def accepted_secret(self) -> str:
        secret = new_secret()
        self.accepted.append(secret)
        self.simulator.set_scenario(keys=self.accepted)
        return secret

    def revoke(self, secret: str) -> None:
        self.simulator.revoke(secret)


@pytest.fixture
def together(simulator: RunningSimulator, settings: object) -> Iterator[Together]:
    """The session simulator, reset to accept no key at all, with TOGETHER_BASE_URL pointing at it."""
    simulator.reset(keys=[])
    settings.TOGETHER_BASE_URL = simulator.base_url
    yield Together(simulator)
    simulator.reset()  # back to accepting any key, for the tests that share it after this one


def _user_in(username: str, group: str | None) -> User:
    user = User.objects.create_user(username=username)  # no password: tests log in with force_login
    if group:
        user.groups.add(Group.objects.get_or_create(name=group)[0])
    return user


@pytest.fixture
def key_admin(db: None) -> User:
    return _user_in("kim-admin", KEY_ADMIN_GROUP)


@pytest.fixture
def viewer(db: None) -> User:
    return _user_in("vic-viewer", VIEWER_GROUP)


@pytest.fixture
def admin_web(key_admin: User) -> Client:
    client = Client()
    client.force_login(key_admin)
    return client


@pytest.fixture
def viewer_web(viewer: User) -> Client:
    client = Client()
    client.force_login(viewer)
    return client
