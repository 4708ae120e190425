from __future__ import annotations

import socket
import threading
import time
from datetime import timedelta

import httpx
import pytest
import time_machine
import uvicorn
from cryptography.fernet import Fernet
from django.conf import settings
from django.contrib.auth.models import User
from django.core.cache import cache
from django.test import override_settings
from django.utils import timezone

from tests.waiting import wait_until
from together_dash.keys import crypto, lifecycle, tasks
from together_dash.keys.audit import Actor
from together_dash.keys.cache import KEY_CACHE_VERSION, bump_key_cache_version, key_cache_version
from together_dash.keys.lifecycle import KeyActionError
from together_dash.keys.models import AppKey, AuditLog, TogetherKey
from together_dash.pollers import schedule
from together_dash.pollers.models import PollerHeartbeat
from together_dash.proxy.app import Proxy, ProxyConfig
from together_dash.together.client import key_fingerprint
from together_dash.traffic.entries import LogEntry

from .conftest import Together, new_secret

pytestmark = pytest.mark.django_db


@pytest.fixture
def actor(key_admin: User) -> Actor:
    return Actor(user=key_admin, via=AuditLog.Via.WEB, source_address="192.0.2.7")


@pytest.fixture
def upstream(together: Together, actor: Actor) -> tuple[TogetherKey, str]:
    secret = together.accepted_secret()
    return lifecycle.add_upstream_key("prod", secret, actor), secret


def _audit(action: str, outcome: str) -> list[AuditLog]:
    return list(AuditLog.objects.filter(action=action, outcome=outcome))


# ---- add ------------------------------------------------------------------------------------------------


def test_adding_a_key_verifies_it_with_together_then_stores_it_encrypted(
    together: Together, actor: Actor
) -> None:
    secret = together.accepted_secret()
    key = lifecycle.add_upstream_key("prod", secret, actor)
    key.refresh_from_db()
    assert key.secret == secret
    assert secret not in key.secret_encrypted
    assert key.last_four == secret[-4:]
    assert key.health == TogetherKey.Health.HEALTHY
    [entry] = _audit("create", "success")
    assert (entry.key_id, entry.username, entry.source_address) == (key.pk, "kim-admin", "192.0.2.7")


def test_a_key_together_rejects_is_not_stored_and_the_attempt_is_audited(
    together: Together, actor: Actor
) -> None:
    rejected = new_secret()
    with pytest.raises(KeyActionError) as excinfo:
        lifecycle.add_upstream_key("prod", rejected, actor)
    assert "HTTP 401" in str(excinfo.value)
    assert rejected not in str(excinfo.value)
    assert excinfo.value.__cause__ is None and excinfo.value.__suppress_context__
    assert not TogetherKey.objects.exists()
    [entry] = _audit("create", "failure")
    assert entry.key_label == "prod" and rejected not in entry.detail


def test_a_secret_with_spaces_is_refused_before_any_call(together: Together, actor: Actor) -> None:
    with pytest.raises(KeyActionError, match="one line without spaces"):
        lifecycle.add_upstream_key("prod", "two words here", actor)
    assert not TogetherKey.objects.exists()


def test_a_duplicate_name_is_refused_and_audited(upstream: tuple[TogetherKey, str], actor: Actor) -> None:
    with pytest.raises(KeyActionError, match="already exists"):
        lifecycle.add_upstream_key("prod", new_secret(), actor)
    assert len(_audit("create", "failure")) == 1


# ---- rotate ---------------------------------------------------------------------------------------------


def test_rotate_verifies_the_new_secret_and_switches_at_once_keeping_the_id(
    upstream: tuple[TogetherKey, str], together: Together, actor: Actor, django_capture_on_commit_callbacks
) -> None:
    key, old = upstream
    new = together.accepted_secret()
    version = key_cache_version()
    with django_capture_on_commit_callbacks(execute=True):
        lifecycle.rotate_upstream_key(key, new, actor)
    fresh = TogetherKey.objects.get()
    assert fresh.pk == key.pk
    assert fresh.secret == new
    assert fresh.rotated_by.username == "kim-admin" and fresh.rotated_at is not None
    assert fresh.previous_secret_encrypted == "" and fresh.previous_secret is None
    assert key_cache_version() > version
    [entry] = _audit("rotate", "success")
    assert f"…{old[-4:]} → …{new[-4:]}" in entry.detail and "destroyed" in entry.detail


def test_rotating_to_a_secret_together_rejects_keeps_the_old_secret(
    upstream: tuple[TogetherKey, str], actor: Actor, django_capture_on_commit_callbacks
) -> None:
    key, old = upstream
    rejected = new_secret()
    version = key_cache_version()
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(KeyActionError) as excinfo:
        lifecycle.rotate_upstream_key(key, rejected, actor)
    assert rejected not in str(excinfo.value)
    fresh = TogetherKey.objects.get()
    assert fresh.secret == old and fresh.rotated_at is None
    assert key_cache_version() == version
    [entry] = _audit("rotate", "failure")
    assert entry.key_id == key.pk and "401" in entry.detail and rejected not in entry.detail


def test_a_secret_the_simulator_revoked_fails_verification(
    upstream: tuple[TogetherKey, str], together: Together, actor: Actor
) -> None:
    key, old = upstream
    new = together.accepted_secret()
    together.revoke(new)
    with pytest.raises(KeyActionError, match="HTTP 401"):
        lifecycle.rotate_upstream_key(key, new, actor)
    assert TogetherKey.objects.get().secret == old


def test_rotating_to_the_same_secret_is_refused(upstream: tuple[TogetherKey, str], actor: Actor) -> None:
    key, old = upstream
    with pytest.raises(KeyActionError, match="is the current secret"):
        lifecycle.rotate_upstream_key(key, old, actor)


def test_a_rotation_based_on_a_stale_read_loses_to_the_one_that_committed_first(
    upstream: tuple[TogetherKey, str], together: Together, actor: Actor
) -> None:
    key, _ = upstream
    stale = TogetherKey.objects.get()
    first, second = together.accepted_secret(), together.accepted_secret()
    lifecycle.rotate_upstream_key(key, first, actor)
    with pytest.raises(KeyActionError, match="changed meanwhile"):
        lifecycle.rotate_upstream_key(stale, second, actor)
    assert TogetherKey.objects.get().secret == first


def test_the_grace_window_keeps_the_old_secret_then_expire_destroys_it(
    upstream: tuple[TogetherKey, str], together: Together, actor: Actor
) -> None:
    key, old = upstream
    new = together.accepted_secret()
    lifecycle.rotate_upstream_key(key, new, actor, grace=timedelta(minutes=10))
    fresh = TogetherKey.objects.get()
    assert fresh.secret == new and fresh.previous_secret == old
    assert lifecycle.expire_grace_windows() == 0
    with time_machine.travel(timezone.now() + timedelta(minutes=11)):
        assert fresh.previous_secret is None and fresh.secret == new
        assert lifecycle.expire_grace_windows() == 1
    fresh.refresh_from_db()
    assert (fresh.previous_secret_encrypted, fresh.previous_last_four, fresh.previous_valid_until) == (
        "",
        "",
        None,
    )
    assert len(_audit("expire_grace", "success")) == 1


def test_rollback_within_the_grace_window_restores_the_previous_secret(
    upstream: tuple[TogetherKey, str], together: Together, actor: Actor
) -> None:
    key, old = upstream
    lifecycle.rotate_upstream_key(key, together.accepted_secret(), actor, grace=timedelta(minutes=10))
    lifecycle.rollback_upstream_key(TogetherKey.objects.get(), actor)
    fresh = TogetherKey.objects.get()
    assert fresh.secret == old and fresh.previous_secret is None
    assert len(_audit("rollback", "success")) == 1


def test_rollback_without_a_previous_secret_is_refused(
    upstream: tuple[TogetherKey, str], actor: Actor
) -> None:
    with pytest.raises(KeyActionError, match="no previous secret"):
        lifecycle.rollback_upstream_key(upstream[0], actor)


# ---- revoke ---------------------------------------------------------------------------------------------


def test_revoke_is_immediate_and_final(
    upstream: tuple[TogetherKey, str], together: Together, actor: Actor, django_capture_on_commit_callbacks
) -> None:
    key, _ = upstream
    lifecycle.rotate_upstream_key(key, together.accepted_secret(), actor, grace=timedelta(hours=1))
    version = key_cache_version()
    with django_capture_on_commit_callbacks(execute=True):
        lifecycle.revoke_upstream_key(TogetherKey.objects.get(), actor)
    assert key_cache_version() > version
    fresh = TogetherKey.objects.get()
    assert fresh.status == TogetherKey.Status.REVOKED and fresh.revoked_by.username == "kim-admin"
    assert fresh.previous_secret is None
    assert fresh.secret_encrypted == "" and fresh.previous_secret_encrypted == ""
    with pytest.raises(KeyActionError, match="already revoked"):
        lifecycle.revoke_upstream_key(fresh, actor)
    with pytest.raises(KeyActionError, match="revoked keys cannot be rotated"):
        lifecycle.rotate_upstream_key(fresh, together.accepted_secret(), actor)
    assert len(_audit("revoke", "success")) == 1 and len(_audit("revoke", "failure")) == 1


def test_the_key_cache_version_starts_again_when_the_cache_lost_it() -> None:
    cache.delete(KEY_CACHE_VERSION)
    assert key_cache_version() == 0
    assert bump_key_cache_version() == 1 and bump_key_cache_version() == 2
    assert key_cache_version() == 2


# ---- app keys -------------------------------------------------------------------------------------------


def test_an_app_key_is_issued_once_and_stored_as_a_hash(
    upstream: tuple[TogetherKey, str], actor: Actor
) -> None:
    app_key, plaintext = lifecycle.create_app_key(
        "web", actor, upstream=upstream[0], allowed_models=["m1"], rate_limit_per_minute=60
    )
    stored = AppKey.objects.get()
    assert plaintext.startswith(f"tdk_{stored.prefix}_")
    assert plaintext not in (stored.secret_hash, stored.prefix) and stored.matches(plaintext)
    assert (stored.upstream_key, stored.allowed_models, stored.rate_limit_per_minute) == (
        upstream[0],
        ["m1"],
        60,
    )
    assert "m1" in AuditLog.objects.get(key_type="app", action="create").detail


def test_an_app_key_cannot_map_to_a_revoked_upstream_key(
    upstream: tuple[TogetherKey, str], actor: Actor
) -> None:
    revoked = lifecycle.revoke_upstream_key(upstream[0], actor)
    with pytest.raises(KeyActionError, match="revoked"):
        lifecycle.create_app_key("web", actor, upstream=revoked)
    assert not AppKey.objects.exists()


def test_a_rotated_app_key_accepts_the_old_secret_only_during_the_grace_window(actor: Actor) -> None:
    app_key, old = lifecycle.create_app_key("web", actor)
    new = lifecycle.rotate_issued_key(app_key, actor, grace=timedelta(minutes=5))
    stored = AppKey.objects.get()
    assert stored.matches(new) and stored.matches(old)
    with time_machine.travel(timezone.now() + timedelta(minutes=6)):
        assert stored.matches(new) and not stored.matches(old)
        assert lifecycle.expire_grace_windows() == 1
    assert AppKey.objects.get().previous_hash == ""


def test_the_periodic_task_ends_grace_windows_and_reports_its_heartbeat(actor: Actor) -> None:
    app_key, _ = lifecycle.create_app_key("web", actor)
    lifecycle.rotate_issued_key(app_key, actor, grace=timedelta(minutes=5))
    later = timezone.now() + timedelta(minutes=6)

    with time_machine.travel(later, tick=False):
        tasks.expire_key_grace.apply()

    assert AppKey.objects.get().previous_hash == ""
    heartbeat = PollerHeartbeat.objects.get(name=tasks.TASK_NAME)
    assert heartbeat.last_success == later
    assert heartbeat.last_report["counts"] == {"old_secrets_destroyed": 1}
    spec = schedule.BY_NAME[tasks.TASK_NAME]
    assert spec.task == tasks.expire_key_grace.name and spec.every <= 60


def test_an_app_key_rotated_without_grace_refuses_the_old_secret_at_once(actor: Actor) -> None:
    app_key, old = lifecycle.create_app_key("web", actor)
    new = lifecycle.rotate_issued_key(app_key, actor)
    stored = AppKey.objects.get()
    assert stored.matches(new) and not stored.matches(old)


def test_a_revoked_app_key_is_unusable_including_its_grace_secret(actor: Actor) -> None:
    app_key, _ = lifecycle.create_app_key("web", actor)
    lifecycle.rotate_issued_key(app_key, actor, grace=timedelta(hours=1))
    lifecycle.revoke_issued_key(AppKey.objects.get(), actor)
    stored = AppKey.objects.get()
    assert not stored.is_usable and stored.previous_hash == "" and stored.previous_valid_until is None
    with pytest.raises(KeyActionError, match="revoked"):
        lifecycle.rotate_issued_key(stored, actor)
    with pytest.raises(KeyActionError, match="already revoked"):
        lifecycle.revoke_issued_key(stored, actor)


# ---- encryption key rotation ----------------------------------------------------------------------------


def test_rotate_encryption_key_reencrypts_every_row_and_the_old_key_can_be_dropped(
    together: Together, actor: Actor
) -> None:
    old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    with override_settings(FIELD_ENCRYPTION_KEYS=[old_key]):
        first, second, third = (together.accepted_secret() for _ in range(3))
        lifecycle.add_upstream_key("a", first, actor)
        rotated = lifecycle.add_upstream_key("b", second, actor)
        lifecycle.rotate_upstream_key(rotated, third, actor, grace=timedelta(hours=1))
    with override_settings(FIELD_ENCRYPTION_KEYS=[new_key, old_key]):
        assert lifecycle.rotate_encryption_key(actor) == 2
    with override_settings(FIELD_ENCRYPTION_KEYS=[new_key]):
        a, b = TogetherKey.objects.order_by("name")
        assert (a.secret, b.secret, b.previous_secret) == (first, third, second)
    assert len(_audit("reencrypt", "success")) == 1


def test_rotate_encryption_key_names_rows_it_cannot_decrypt(together: Together, actor: Actor) -> None:
    lost, current = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    with override_settings(FIELD_ENCRYPTION_KEYS=[lost]):
        lifecycle.add_upstream_key("orphan", together.accepted_secret(), actor)
    with override_settings(FIELD_ENCRYPTION_KEYS=[current]), pytest.raises(KeyActionError, match="orphan"):
        lifecycle.rotate_encryption_key(actor)
    assert len(_audit("reencrypt", "failure")) == 1


def test_reencryption_changes_the_ciphertext_but_not_the_secret(
    upstream: tuple[TogetherKey, str], actor: Actor
) -> None:
    key, secret = upstream
    before = key.secret_encrypted
    lifecycle.rotate_encryption_key(actor)
    key.refresh_from_db()
    assert key.secret_encrypted != before and crypto.decrypt(key.secret_encrypted) == secret


# ---- the proxy while keys change (uvicorn on loopback, the simulator upstream) -------------------------

# The proxy polls the key-state version every 0.25 s (proxy/auth.py); a switch within this
# much (slack for a busy machine) counts as "at once". Its key cache lives 60 s here, so only the
# version can explain a switch.
SWITCH_SECONDS = 1.0


class ServedProxy:
    """The proxy's ASGI app under uvicorn in a thread, upstream the simulator."""

    def __init__(self, key_cache_seconds: float = 60.0) -> None:
        config = ProxyConfig(base_url=settings.TOGETHER_BASE_URL, key_cache_seconds=key_cache_seconds)
        self.logged: list[LogEntry] = []  # the proxy's request logs, each naming the secret's fingerprint
        self.app = Proxy(config, record=self.logged.extend)
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self.base_url = f"http://127.0.0.1:{self._socket.getsockname()[1]}/v1"
        self._server = uvicorn.Server(uvicorn.Config(self.app, lifespan="on", log_level="warning"))
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )

    def __enter__(self) -> ServedProxy:
        self._thread.start()
        wait_until(lambda: self._server.started, message="the proxy did not start")
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()


class Traffic:
    """Clients sending chat completions through the proxy, back to back, recording every status."""

    def __init__(self, base_url: str, app_key: str, clients: int = 4) -> None:
        self.base_url, self.app_key = base_url, app_key
        self.statuses: list[tuple[float, int, str]] = []
        # Per client, when it sent the request it last had an answer to.
        self._last_answered_sent = [float("-inf")] * clients
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(clients)]

    def _run(self, client_number: int) -> None:
        body = {
            "model": "meta-llama/Llama-3.3-70B-Instruct-Turbo",
            "messages": [{"role": "user", "content": "hi"}],
        }
        headers = {"Authorization": f"Bearer {self.app_key}"}
        with httpx.Client(base_url=self.base_url, timeout=10) as client:
            while not self._stop.is_set():
                sent = time.monotonic()
                response = client.post("/chat/completions", json=body, headers=headers)
                self.statuses.append((time.monotonic(), response.status_code, response.text[:300]))
                self._last_answered_sent[client_number] = sent

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def failures(self) -> list[tuple[float, int, str]]:
        return [entry for entry in self.statuses if entry[1] != 200]

    def count_after(self, moment: float) -> int:
        return sum(1 for when, _, _ in self.statuses if when > moment)

    def wait_for(self, count: int, after: float, timeout: float = 15.0) -> None:
        """Let traffic flow until `count` requests were answered after `after` (a busy machine is slow)."""
        wait_until(lambda: self.count_after(after) >= count, timeout, f"{count} answers did not come")

    def wait_for_each_client(self, sent_after: float = float("-inf"), timeout: float = 15.0) -> None:
        """Wait until every client has had an answer to a request it sent after `sent_after`."""
        wait_until(lambda: min(self._last_answered_sent) > sent_after, timeout, "a client had no answer")


def wait_for_switch(proxy: ServedProxy, secret: str) -> None:
    """Wait until the proxy has forwarded a request with `secret` (it logs the fingerprint it used)."""
    # Well within the proxy's 60 s key cache: only the key-state version can explain the switch.
    wait_until(lambda: any(e.key_fingerprint == key_fingerprint(secret) for e in list(proxy.logged)),
               timeout=15.0, message="the proxy did not switch to the new secret")


@pytest.mark.django_db(transaction=True)
def test_rotating_while_traffic_flows_fails_no_request(together: Together, key_admin: User) -> None:
    old, new = together.accepted_secret(), together.accepted_secret()
    actor = Actor(user=key_admin)
    key = lifecycle.add_upstream_key("prod", old, actor)
    _, app_key = lifecycle.create_app_key("web", actor, upstream=key)
    with ServedProxy() as proxy, Traffic(proxy.base_url, app_key) as traffic:
        traffic.wait_for_each_client()
        lifecycle.rotate_upstream_key(key, new, actor)
        wait_for_switch(proxy, new)
        traffic.wait_for_each_client(sent_after=time.monotonic())  # none still on its way with the old one
        together.revoke(old)  # the admin revokes the old secret at Together
        revoked_at = time.monotonic()
        traffic.wait_for(40, after=revoked_at)
    assert traffic.count_after(revoked_at) >= 40, "traffic kept flowing after the old secret died"
    assert traffic.failures() == []


@pytest.mark.django_db(transaction=True)
def test_a_revoked_upstream_key_stops_proxy_traffic_at_once(together: Together, key_admin: User) -> None:
    actor = Actor(user=key_admin)
    key = lifecycle.add_upstream_key("prod", together.accepted_secret(), actor)
    _, app_key = lifecycle.create_app_key("web", actor, upstream=key)
    with ServedProxy() as proxy, Traffic(proxy.base_url, app_key, clients=2) as traffic:
        traffic.wait_for_each_client()  # the proxy holds the key's credential in its cache
        lifecycle.revoke_upstream_key(key, actor)
        revoked_at = time.monotonic()
        traffic.wait_for(10, after=revoked_at + SWITCH_SECONDS)
    late = [(status, text) for when, status, text in traffic.statuses if when > revoked_at + SWITCH_SECONDS]
    assert len(late) >= 10
    assert all(status == 401 and "'prod'" in text and "revoked" in text for status, text in late)
