"""Run the Together API simulator: `python manage.py together_simulator --port 8001`."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from together_dash.simulator.scenario import Scenario, load_scenario
from together_dash.simulator.server import serve


class Command(BaseCommand):
    help = "Serve a local stand-in for the Together AI API at http://HOST:PORT/v1."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=8001)
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--keys", default="", help="comma-separated accepted API keys (default: any key)")
        parser.add_argument("--scenario", default="", help="a scenario JSON file (see simulator/scenario.py)")
        parser.add_argument("--latency-ms", type=float, default=None, help="added to every response")
        parser.add_argument(
            "--job-speed",
            type=float,
            default=None,
            help="fine-tunes and batches progress this many times faster",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            scenario = build_scenario(options)
        except (OSError, ValueError) as exc:
            raise CommandError(f"invalid scenario: {exc}") from exc
        self.stdout.write(f"Together API simulator on http://{options['host']}:{options['port']}/v1")
        serve(options["host"], options["port"], scenario)


def build_scenario(options: dict[str, Any]) -> Scenario:
    """The scenario file (if any) with the command-line options on top."""
    scenario = load_scenario(options["scenario"]) if options.get("scenario") else Scenario()
    overrides: dict[str, Any] = {}
    keys = [key.strip() for key in (options.get("keys") or "").split(",") if key.strip()]
    if keys:
        overrides["keys"] = keys
    if options.get("latency_ms") is not None:
        overrides["latency_ms"] = options["latency_ms"]
    if options.get("job_speed") is not None:
        overrides["job_speed"] = options["job_speed"]
    return Scenario.from_dict(overrides, base=scenario) if overrides else scenario
