"""Demo mode only: an idle dedicated endpoint, and fine-tunes and batches kept going on the simulator, so the
pollers have work to show."""
from __future__ import annotations

import itertools
import time
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from together_dash.demo.jobs import batch_lines, ensure_idle_endpoint, start_batch, start_fine_tune
from together_dash.keys.models import TogetherKey
from together_dash.together.client import TogetherAPIError, TogetherClient

# At the demo simulator's job speed (20x) this fine-tune trains for about two minutes.
DEMO_SAMPLES, DEMO_EPOCHS = 4800, 10
DEMO_BATCH_LINES = 2000


class Command(BaseCommand):
    help = (
        "Demo mode only: create an idle dedicated endpoint (once), then start a fine-tune (every other one "
        "fails with user_error) and a batch with some failing requests on the simulator now and every "
        "--every seconds, until interrupted."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--every", type=float, default=180.0, help="seconds between new jobs")
        parser.add_argument("--once", action="store_true", help="start one round of jobs and exit")

    def handle(self, *args: Any, **options: Any) -> None:
        # Jobs cost money on a real account: this only ever talks to the simulator of demo mode.
        if not settings.DEMO_MODE:
            raise CommandError("demo_jobs runs in demo mode only (DEMO_MODE=true, the simulator upstream).")
        key = TogetherKey.objects.filter(status=TogetherKey.Status.ACTIVE).order_by("id").first()
        if key is None:
            raise CommandError("No active upstream key: run manage.py bootstrap first.")
        with TogetherClient(key.secret, base_url=settings.TOGETHER_BASE_URL, max_retries=0) as client:
            self._wait_for_upstream(client)
            self._idle_endpoint(client)
            for round_number in itertools.count():
                self._start_round(client, failing=round_number % 2 == 1)
                if options["once"]:
                    return
                time.sleep(options["every"])

    def _wait_for_upstream(self, client: TogetherClient, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.list_models()
                return
            except TogetherAPIError:
                if time.monotonic() > deadline:
                    url = settings.TOGETHER_BASE_URL
                    raise CommandError(f"The simulator at {url} did not answer.") from None
                time.sleep(1.0)

    def _idle_endpoint(self, client: TogetherClient) -> None:
        try:
            endpoint = ensure_idle_endpoint(client)
        except TogetherAPIError as exc:
            self.stderr.write(f"demo_jobs: could not create the idle endpoint: {exc.kind}: {exc}")
            return
        if endpoint is not None:
            name = endpoint.name
            self.stdout.write(f"demo_jobs: created the idle dedicated endpoint {name} (no inactive timeout)")

    def _start_round(self, client: TogetherClient, failing: bool) -> None:
        try:
            job = start_fine_tune(client, "sim-user-error" if failing else "demo", DEMO_SAMPLES, DEMO_EPOCHS)
            lines = batch_lines(DEMO_BATCH_LINES, invalid=tuple(range(7, DEMO_BATCH_LINES, 50)))
            batch = start_batch(client, lines)
        except TogetherAPIError as exc:  # e.g. the demo traffic's rare 402: try again next round
            self.stderr.write(f"demo_jobs: could not start jobs: {exc.kind}: {exc}")
            return
        self.stdout.write(f"demo_jobs: started fine-tune {job.id} and batch {batch.id}")
