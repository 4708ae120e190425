"""Moving the test database along its migrations, for the tests of data migrations."""

from __future__ import annotations

from django.db import connection
from django.db.migrations.executor import MigrationExecutor


def migrate(*targets: tuple[str, str | None]) -> None:
    """Each app to the migration named (None: before its first)."""
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(list(targets))


def migrate_to_latest() -> None:
    """Every app forward again: going back also took back the migrations that depend on the old one."""
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())
