"""bandit finds nothing in together_dash/ that is not fixed or suppressed with a reason, and every
vulnerability `make audit` is told to accept carries its reason too."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from .conftest import ROOT

REASON = re.compile(r"[a-z]{3,}\W+[a-z_]{2,}.*nosec")  # some words before the nosec
BANDIT = [sys.executable, "-m", "bandit", "-c", "pyproject.toml", "-f", "json", "-q"]


def bandit(*targets: str) -> list[dict]:
    done = subprocess.run([*BANDIT, "-r", *targets], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode in (0, 1), done.stderr
    return json.loads(done.stdout)["results"]


def test_bandit_finds_nothing_in_the_package() -> None:
    results = bandit("together_dash")
    findings = [f"{r['filename']}:{r['line_number']} {r['test_id']} {r['issue_text']}" for r in results]

    assert findings == [], "fix each, or add `# nosec BXXX` with the reason on its line"


def test_bandit_with_our_configuration_still_finds_the_usual_mistakes(tmp_path: Path) -> None:
    sample = tmp_path / "mistakes.py"
    sample.write_text(
        "import subprocess\n"
        "def f(cursor, name):\n"
        "    cursor.execute(f\"SELECT * FROM users WHERE name = '{name}'\")\n"
        "    subprocess.call(name, shell=True)\n"
        "    return eval(name)\n"
    )

    found = {result["test_id"] for result in bandit(str(sample))}

    assert {"B608", "B602", "B307"} <= found


def test_every_check_the_configuration_skips_says_why() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    skips = tomllib.loads(text)["tool"]["bandit"]["skips"]
    block = text[text.index("[tool.bandit]"):]

    for test_id in skips:
        before = block[: block.index(f'"{test_id}"')].rstrip().splitlines()
        assert before[-1].strip().startswith(("#", '"B')), f"{test_id} has no comment giving the reason"


def test_every_suppressed_line_gives_a_reason() -> None:
    bare = []
    for path in (ROOT / "together_dash").rglob("*.py"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            comment = line.partition("#")[2]
            if "nosec" in comment and not REASON.search(comment.replace("noqa", "")):
                bare.append(f"{path.relative_to(ROOT)}:{number}")

    assert bare == []


def test_every_accepted_vulnerability_gives_a_reason() -> None:
    entries = [line for line in (ROOT / ".pip-audit-ignore").read_text().splitlines() if line.strip()]
    for line in entries:
        if not line.startswith("#"):
            advisory, _, reason = line.partition(" ")
            assert re.fullmatch(r"[A-Z]+-[\w-]+", advisory) and len(reason.strip()) > 10, line
