"""The diagnostics page: preflight for viewers, the debug bundle for key admins; old /tools/ addresses."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client

from together_dash.core.roles import VIEWER_GROUP

pytestmark = pytest.mark.django_db


@pytest.fixture
def viewer_web() -> Client:
    user = User.objects.create_user("viewer")
    user.groups.add(Group.objects.get_or_create(name=VIEWER_GROUP)[0])
    client = Client()
    client.force_login(user)
    return client


def test_a_viewer_sees_preflight_and_how_to_get_a_bundle_but_no_download(viewer_web: Client) -> None:
    page = viewer_web.get("/diagnostics/preflight/").content.decode()
    assert "<h1>Diagnostics</h1>" in page
    assert "manage.py check_connectivity" in page
    assert 'action="/diagnostics/debug-bundle/"' not in page


def test_a_key_admin_can_download_the_bundle_from_the_page(admin_client: Client) -> None:
    page = admin_client.get("/diagnostics/preflight/").content.decode()
    assert 'action="/diagnostics/debug-bundle/"' in page


def test_the_navigation_names_the_apps(viewer_web: Client) -> None:
    page = viewer_web.get("/diagnostics/preflight/").content.decode()
    assert '<a href="/datasets/">Datasets</a>' in page
    assert '<a href="/diagnostics/preflight/">Diagnostics</a>' in page
    assert ">Tools<" not in page


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("/tools/datasets/", "/datasets/"),
        ("/tools/datasets/7/", "/datasets/7/"),
        ("/tools/preflight/", "/diagnostics/preflight/"),
    ],
)
def test_old_tools_addresses_redirect_to_their_new_home(viewer_web: Client, old: str, new: str) -> None:
    response = viewer_web.get(old)
    assert (response.status_code, response["Location"]) == (302, new)
    assert viewer_web.post(old).status_code == 405
