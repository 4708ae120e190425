from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.test import override_settings

from together_dash.keys.models import TogetherKey

pytestmark = pytest.mark.django_db


def _bootstrap() -> str:
    out = StringIO()
    call_command("bootstrap", stdout=out)
    return out.getvalue()


def test_it_creates_the_roles_and_prints_a_generated_password_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DASH_ADMIN_PASSWORD", raising=False)
    first = _bootstrap()
    assert "password" in first
    assert set(Group.objects.values_list("name", flat=True)) == {"viewer", "key_admin"}
    second = _bootstrap()
    assert "password" not in second
    assert get_user_model().objects.filter(username="admin", is_superuser=True).count() == 1


def test_it_takes_the_admin_login_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DASH_ADMIN_USERNAME", "ops")
    monkeypatch.setenv("DASH_ADMIN_PASSWORD", "a-long-passphrase-42")
    output = _bootstrap()
    assert "a-long-passphrase-42" not in output
    assert get_user_model().objects.get(username="ops").check_password("a-long-passphrase-42")


@override_settings(TOGETHER_API_KEY="tgp_v1_examplekeyfortests0000000000000000abcd", DEMO_MODE=False)
def test_it_stores_the_environment_key_encrypted() -> None:
    _bootstrap()
    key = TogetherKey.objects.get(name="default")
    assert key.last_four == "abcd"
    assert "tgp_v1" not in key.secret_encrypted
    assert key.secret == "tgp_v1_examplekeyfortests0000000000000000abcd"
    _bootstrap()
    assert TogetherKey.objects.count() == 1


@override_settings(TOGETHER_API_KEY="", DEMO_MODE=True)
def test_demo_mode_adds_a_key_for_the_simulator() -> None:
    _bootstrap()
    assert TogetherKey.objects.filter(name="demo").exists()


def test_it_empties_the_folder_the_web_processes_share_their_series_in(tmp_path: object) -> None:
    folder = tmp_path / "prometheus"  # type: ignore[operator]
    folder.mkdir()
    for name in ("counter_101.db", "histogram_101.db", "gauge_livesum_101.db", "gauge_all_7.db"):
        (folder / name).write_bytes(b"\0" * 8)
    (folder / "README.txt").write_text("not ours")

    with override_settings(METRICS_MULTIPROC_DIR=str(folder)):
        output = _bootstrap()

    assert "Cleared 4 Prometheus series files" in output
    assert [path.name for path in folder.iterdir()] == ["README.txt"]
