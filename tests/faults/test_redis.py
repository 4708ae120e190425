"""Redis restarted under a running worker and beat: both carry on, and no periodic run happens twice.

Redis is the broker and the cache. It is shut down without saving (queues and cache entries are lost,
as with a crash of a Redis that does not persist), kept down for longer than the periodic interval so
beat meets a due time while it cannot publish, then started again.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from django.core.cache import cache
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from tests.faults._celery import Beat, Worker, new_queue, redis_broker
from tests.faults._services import restart_redis
from together_dash.alerts.kinds import Kind
from together_dash.alerts.models import Alert, AlertRule
from together_dash.catalog import tasks as catalog_tasks
from together_dash.catalog.models import ModelInfo
from together_dash.keys.models import RateLimitSnapshot
from together_dash.pollers.models import PollerHeartbeat
from together_dash.pollers.testing import add_key
from together_dash.proxy.metrics import DROPPED_CACHE_KEY
from together_dash.simulator import catalog
from together_dash.simulator.testing import RunningSimulator

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_connections")]

INTERVAL = 2  # seconds between runs of each periodic task here
DOWN_SECONDS = 3  # more than INTERVAL: beat has a run due while Redis is away
RUNS_BEFORE, RUNS_AFTER = 2, 3
POLL = "poll_rate_limits"
PERIODIC = {
    # One probe snapshot per run with one key: the snapshots are the list of runs and their times.
    "poll_rate_limits": "together_dash.keys.tasks.poll_rate_limits",
    # Reads the proxy's dropped-logs counter from the cache, which the restart empties.
    "evaluate_alerts": "together_dash.alerts.tasks.evaluate_alerts",
}


def test_after_a_redis_restart_tasks_run_and_beat_schedules_each_due_run_once(
    fresh_simulator: RunningSimulator, tmp_path: Path
) -> None:
    """Promise: after Redis restarts, a task sent then runs (the worker reconnected), beat keeps sending the
    periodic tasks on time, no periodic run happens twice for one due time, and the emptied cache is
    taken in stride (the evaluation runs, no alert from a counter that went back to zero).
    """
    host, port = redis_broker()
    add_key("key-0")
    AlertRule.ensure_defaults()
    queue = new_queue("faults-beat")
    _schedule(queue)
    cache.set(DROPPED_CACHE_KEY, 5, timeout=None)  # the proxy had dropped logs before the restart
    env = {"TOGETHER_BASE_URL": fresh_simulator.base_url}
    with Worker("worker", queue, tmp_path, env) as worker, Beat(tmp_path, env) as beat:
        worker.wait(lambda: len(_runs()) >= RUNS_BEFORE, "beat did not get the poll going")
        restart_redis(host, port, DOWN_SECONDS)
        restarted_at = timezone.now()
        assert cache.get(DROPPED_CACHE_KEY) is None  # the restart really emptied the cache

        catalog_tasks.poll_models.apply_async(queue=queue)
        worker.wait(lambda: ModelInfo.objects.count() == len(catalog.MODELS), "a task sent then did not run")
        worker.wait(
            lambda: len([run for run in _runs() if run > restarted_at]) >= RUNS_AFTER,
            "beat did not carry on after the restart",
        )
        worker.wait(lambda: _succeeded_since("evaluate_alerts", restarted_at), "the evaluation did not run")
        beat.stop()
        published = len(beat.sent(POLL)) - beat.failed(POLL)
        worker.wait(lambda: len(_runs()) >= published, "the worker did not run every poll beat sent")
        time.sleep(INTERVAL)  # a due time run twice would show up by now
        worker.stop()

    # Beat met a due time while Redis was away: that run is skipped (logged), never sent twice later.
    assert beat.failed(POLL) >= 1
    sends = beat.sent(POLL)
    gaps = [(later - earlier).total_seconds() for earlier, later in zip(sends, sends[1:], strict=False)]
    assert min(gaps) >= INTERVAL / 2, f"beat sent one due time twice: {gaps}"
    # Each poll beat managed to send ran exactly once (runs after the outage may come close together:
    # the worker was still reconnecting, so they waited in the queue).
    assert len(_runs()) == published
    assert PollerHeartbeat.objects.get(name=POLL).run_count == published
    succeeded = worker.task_ids("succeeded")
    assert len(succeeded) == len(set(succeeded)), "a task message ran twice"
    # The dropped-logs counter went from 5 to nothing: not a reason to alert. (The outage itself may fire
    # and resolve "poller stale" for these 2-second pollers, rightly.)
    assert not Alert.objects.filter(rule__kind=Kind.LOGS_DROPPED).exclude(state=Alert.State.OK).exists()


def _schedule(queue: str) -> None:
    """The periodic tasks on the test's queue, every INTERVAL seconds, due at once."""
    every, _ = IntervalSchedule.objects.get_or_create(every=INTERVAL, period=IntervalSchedule.SECONDS)
    start = timezone.now() - timedelta(seconds=INTERVAL)
    for name, task in PERIODIC.items():
        PeriodicTask.objects.create(name=name, task=task, interval=every, queue=queue, start_time=start)


def _runs() -> list[datetime]:
    """When each poll_rate_limits run started: its probe snapshot's time, oldest first."""
    probes = RateLimitSnapshot.objects.filter(source=RateLimitSnapshot.Source.PROBE).order_by("taken_at")
    return list(probes.values_list("taken_at", flat=True))


def _succeeded_since(name: str, moment: datetime) -> bool:
    beat = PollerHeartbeat.objects.filter(name=name).first()
    return beat is not None and beat.last_success is not None and beat.last_success > moment
