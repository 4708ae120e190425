"""Run a together SDK's check_file on many files: 1.5.x inside .venv-sdk1, or 3.x in the project's venv.

Reads a JSON list of {"path": str, "purpose": str} on stdin and prints one JSON list of verdicts:
{"path", "is_check_passed", "line_number" (int or null), "message", "exception" (str or null)}.
"""
from __future__ import annotations

import json
import re
import sys
from typing import Any

try:
    from together.lib.utils.files import check_file  # together 3.x
except ImportError:
    from together.utils.files import check_file  # together 1.x

# The SDK puts the line in report["line_number"] for format errors, and only in the message for JSON errors.
LINE_IN_MESSAGE = re.compile(r"\bline (\d+)\b")


def verdict(path: str, purpose: str) -> dict[str, Any]:
    """The SDK's verdict on one file; an exception it raises counts as a refusal."""
    try:
        report = check_file(path, purpose=purpose)
    except Exception as exc:  # e.g. ImportError for parquet without pyarrow, RecursionError
        return {
            "path": path,
            "is_check_passed": False,
            "line_number": None,
            "message": "",
            "exception": repr(exc),
        }
    message = str(report.get("message", ""))
    line = report.get("line_number")
    if line is None and (match := LINE_IN_MESSAGE.search(message)):
        line = int(match.group(1))
    passed = bool(report["is_check_passed"])
    return {
        "path": path,
        "is_check_passed": passed,
        "line_number": line,
        "message": message,
        "exception": None,
    }


def main() -> None:
    """Check every file listed on stdin."""
    cases = json.load(sys.stdin)
    json.dump([verdict(case["path"], case["purpose"]) for case in cases], sys.stdout)


if __name__ == "__main__":
    main()
