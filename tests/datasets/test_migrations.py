"""An install from before the datasets app keeps its validations: the tools app's table is taken over."""

from __future__ import annotations

import pytest
from django.db import connection

from tests.migrating import migrate, migrate_to_latest
from together_dash.datasets.models import DatasetValidation

pytestmark = pytest.mark.django_db(transaction=True)




def _tables() -> list[str]:
    return connection.introspection.table_names()


def test_the_tools_apps_table_and_its_rows_are_taken_over() -> None:
    migrate(("datasets", None))  # back to before the app: its table is the tools app's again
    assert "tools_datasetvalidation" in _tables()
    assert "datasets_datasetvalidation" not in _tables()
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO tools_datasetvalidation (filename, file_path, size, purpose, model_id, status,"
            " progress, failure, created_at) VALUES ('train.jsonl', '', 10, 'fine-tune', '', 'done', 100, '',"
            " CURRENT_TIMESTAMP)"
        )

    migrate_to_latest()

    assert "tools_datasetvalidation" not in _tables()
    assert list(DatasetValidation.objects.values_list("filename", "status")) == [("train.jsonl", "done")]
