"""An install from before the datasets app keeps its validations: the tools app's table is taken over."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from together_dash.datasets.models import DatasetValidation

pytestmark = pytest.mark.django_db(transaction=True)


def _migrate(*targets: tuple[str, str | None]) -> None:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(list(targets))


def _migrate_to_latest() -> None:
    """Every app forward again: going back also took back the migrations that depend on the old one."""
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


def _tables() -> list[str]:
    return connection.introspection.table_names()


def test_the_tools_apps_table_and_its_rows_are_taken_over() -> None:
    _migrate(("datasets", None))  # back to before the app: its table is the tools app's again
    assert "tools_datasetvalidation" in _tables()
    assert "datasets_datasetvalidation" not in _tables()
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO tools_datasetvalidation (filename, file_path, size, purpose, model_id, status,"
            " progress, failure, created_at) VALUES ('train.jsonl', '', 10, 'fine-tune', '', 'done', 100, '',"
            " CURRENT_TIMESTAMP)"
        )

    _migrate_to_latest()

    assert "tools_datasetvalidation" not in _tables()
    assert list(DatasetValidation.objects.values_list("filename", "status")) == [("train.jsonl", "done")]
