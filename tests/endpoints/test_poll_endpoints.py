"""poll_endpoints against the simulator over HTTP: endpoints and exact hardware prices, every state change
as the simulator's clock moves, deletions, and upstream failures recorded without losing anything."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command

from tests.endpoints.conftest import A100, BOOT_S, H200, MODEL, Fleet
from together_dash.endpoints import tasks
from together_dash.endpoints.models import DELETED, Endpoint, EndpointStateChange, Hardware
from together_dash.endpoints.polling import POLLER
from together_dash.pollers.models import PollerHeartbeat, PollerKeyState
from together_dash.pollers.schedule import BY_NAME, sync_periodic_tasks
from together_dash.pollers.testing import fault_for_key
from together_dash.simulator import endpoints as simulated

pytestmark = pytest.mark.django_db(transaction=True)


def states(endpoint_id: str) -> list[tuple[str, str]]:
    changes = EndpointStateChange.objects.filter(endpoint__endpoint_id=endpoint_id).order_by("at", "id")
    return list(changes.values_list("previous_state", "state"))


def test_it_stores_each_endpoint_as_listed(fleet: Fleet) -> None:
    created = fleet.create(display_name="Support bot", inactive_timeout=15,
                           autoscaling={"min_replicas": 2, "max_replicas": 4})

    report = fleet.poll()

    endpoint = Endpoint.objects.get()
    assert report.ok == 1 and report.counts["endpoints"] == 1
    assert endpoint.endpoint_id == created["id"]
    assert endpoint.name == created["name"]  # what requests send as model
    assert (endpoint.model, endpoint.hardware, endpoint.display_name) == (MODEL, A100, "Support bot")
    assert endpoint.state == "PENDING"
    assert (endpoint.min_replicas, endpoint.max_replicas, endpoint.inactive_timeout) == (2, 4, 15)
    assert endpoint.owner == created["owner"]
    assert endpoint.upstream_key_id == fleet.key.pk
    assert endpoint.created_at.timestamp() == pytest.approx(fleet.now.timestamp(), abs=0.001)


def test_hardware_prices_are_stored_in_dollars_exactly(fleet: Fleet) -> None:
    fleet.poll()

    stored = {hw.hardware_id: hw for hw in Hardware.objects.all()}
    assert set(stored) == {hw.id for hw in simulated.HARDWARE}
    for listed in simulated.HARDWARE:
        cents = Decimal(str(listed.cents_per_minute))
        assert stored[listed.id].cents_per_minute == cents
        assert stored[listed.id].price_per_minute_usd == cents / 100
    assert stored[A100].price_per_minute_usd == Decimal("0.0427")
    assert stored[A100].description == "1x a100-80gb, 80 GB"


def test_it_records_every_state_change_as_the_clock_moves(fleet: Fleet) -> None:
    endpoint_id = fleet.create()["id"]
    fleet.poll()
    fleet.advance(simulated.PENDING_S)
    fleet.poll()
    fleet.advance(simulated.STARTING_S)
    fleet.poll()
    fleet.patch(endpoint_id, state="STOPPED")
    fleet.poll()
    fleet.advance(simulated.STOPPING_S)
    fleet.poll()

    assert states(endpoint_id) == [
        ("", "PENDING"), ("PENDING", "STARTING"), ("STARTING", "STARTED"), ("STARTED", "STOPPING"),
        ("STOPPING", "STOPPED"),
    ]
    started = EndpointStateChange.objects.get(state="STARTED")
    assert started.at == fleet.now - timedelta(seconds=simulated.STOPPING_S)
    assert started.previous_seen_at == started.at - timedelta(seconds=simulated.STARTING_S)


def test_a_poll_that_sees_nothing_new_records_nothing(fleet: Fleet) -> None:
    fleet.create()
    fleet.poll()
    fleet.advance(simulated.PENDING_S / 2)

    report = fleet.poll()

    assert report.counts["state_changes"] == 0
    assert EndpointStateChange.objects.count() == 1
    assert Endpoint.objects.get().last_seen == fleet.now


def test_the_self_stop_of_an_inactive_timeout_is_seen(fleet: Fleet) -> None:
    endpoint_id = fleet.create(inactive_timeout=5)["id"]
    fleet.run(BOOT_S + 5 * 60 + simulated.STOPPING_S + 60)

    assert states(endpoint_id)[-2:] == [("STARTED", "STOPPING"), ("STOPPING", "STOPPED")]


def test_an_endpoint_on_unavailable_hardware_ends_in_error(fleet: Fleet) -> None:
    fleet.create(hardware=H200, model="meta-llama/Llama-3.3-70B-Instruct-Turbo")
    fleet.run(simulated.PENDING_S + 5, every=5)

    assert Endpoint.objects.get().state == "ERROR"


def test_a_deleted_endpoint_is_marked_deleted_and_keeps_its_history(fleet: Fleet) -> None:
    endpoint_id = fleet.create()["id"]
    fleet.run(BOOT_S)
    fleet.delete(endpoint_id)

    report = fleet.poll()

    endpoint = Endpoint.objects.get()
    assert report.counts["deleted"] == 1
    assert endpoint.state == DELETED and endpoint.gone_at == fleet.now
    assert states(endpoint_id)[-1] == ("STARTED", DELETED)
    assert not Endpoint.objects.listed().exists()


def test_keys_of_one_project_store_its_endpoints_once(fleet: Fleet, other_key: tuple) -> None:
    fleet.create()
    fleet.create(hardware="1x_nvidia_h100_80gb_sxm")

    report = fleet.poll()

    assert report.ok == 2
    assert Endpoint.objects.count() == 2
    assert EndpointStateChange.objects.count() == 2


@pytest.mark.parametrize("fault", ["401", "403", "500", "503"])
def test_an_upstream_error_is_recorded_on_the_key_and_loses_nothing(fleet: Fleet, fault: str) -> None:
    endpoint_id = fleet.create()["id"]
    fleet.run(BOOT_S)
    before = states(endpoint_id)
    fleet.advance(60)

    report = fleet.poll(config=fault_for_key("main", fault))

    state = PollerKeyState.objects.get(poller=POLLER, key=fleet.key)
    beat = PollerHeartbeat.objects.get(name=POLLER)
    assert report.failed == 1 and report.ok == 0
    assert state.consecutive_failures == 1
    # The simulator's 403 is one of Together's real ones (a context-length body): either 403 kind.
    assert state.last_error_kind in {
        "401": {"invalid_api_key"}, "403": {"permission_denied", "token_limit_exceeded"},
        "500": {"model_overloaded"}, "503": {"service_unavailable"},
    }[fault]
    assert beat.last_error.startswith("all 1 keys failed")
    assert fleet.secret not in beat.last_error + state.last_error
    # Nothing is taken for deleted or changed on a failed answer.
    endpoint = Endpoint.objects.get(endpoint_id=endpoint_id)
    assert endpoint.state == "STARTED" and endpoint.gone_at is None
    assert endpoint.last_seen == fleet.now - timedelta(seconds=60)

    fleet.poll()

    assert PollerKeyState.objects.get(poller=POLLER, key=fleet.key).consecutive_failures == 0
    assert not PollerHeartbeat.objects.get(name=POLLER).is_failing
    assert states(endpoint_id) == before == [("", "STARTED")]
    assert Endpoint.objects.get().last_seen == fleet.now


def test_a_failing_key_does_not_stop_the_others(fleet: Fleet, other_key: tuple) -> None:
    fleet.create()

    report = fleet.poll(config=fault_for_key("main", "500"))

    assert (report.ok, report.failed) == (1, 1)
    assert Endpoint.objects.get().upstream_key_id == other_key[0].pk
    assert not PollerHeartbeat.objects.get(name=POLLER).is_failing


def test_a_price_that_cannot_be_stored_exactly_fails_the_key_with_a_clear_error(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    odd = simulated.Hardware("odd", "a100-80gb", "sxm", 80, 1, 1e-19, "available")
    monkeypatch.setattr(simulated, "HARDWARE", (*simulated.HARDWARE, odd))
    fleet.create()

    report = fleet.poll()

    assert report.failed == 1
    assert "cannot be stored exactly" in PollerKeyState.objects.get(poller=POLLER).last_error
    assert not Endpoint.objects.exists() and not Hardware.objects.exists()


def test_the_poller_is_scheduled_and_has_a_heartbeat(fleet: Fleet) -> None:
    sync_periodic_tasks()
    fleet.poll()

    assert BY_NAME[POLLER].task == "together_dash.endpoints.tasks.poll_endpoints"
    assert PollerHeartbeat.objects.get(name=POLLER).last_success == fleet.now


def test_the_celery_task_runs_the_poll_under_its_task_id(fleet: Fleet) -> None:
    fleet.create()

    result = tasks.poll_endpoints.apply(task_id="endpoints-task-1")

    assert result.successful()
    assert Endpoint.objects.count() == 1
    assert PollerHeartbeat.objects.get(name=POLLER).last_success is not None


def test_the_command_runs_the_same_poll(fleet: Fleet) -> None:
    fleet.create()
    out = StringIO()
    call_command("poll_endpoints", stdout=out)

    assert "poll_endpoints: 1/1 keys ok" in out.getvalue()
    assert "endpoints=1" in out.getvalue()
    assert Endpoint.objects.count() == 1
