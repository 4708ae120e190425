"""The two roles, as Django groups: viewers (ops) read everything, key admins also change keys."""
from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse

VIEWER_GROUP = "viewer"
KEY_ADMIN_GROUP = "key_admin"


def is_key_admin(user: Any) -> bool:
    """Superusers and members of the key_admin group may rotate and revoke keys."""
    if not user.is_authenticated or not user.is_active:
        return False
    return user.is_superuser or user.groups.filter(name=KEY_ADMIN_GROUP).exists()


def is_viewer(user: Any) -> bool:
    """Anyone who may read the dashboard: viewers, key admins and superusers."""
    if not user.is_authenticated or not user.is_active:
        return False
    return user.is_superuser or user.groups.filter(name__in=[VIEWER_GROUP, KEY_ADMIN_GROUP]).exists()


def viewer_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Login required, then the viewer role (403 for a logged-in user without a role)."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not is_viewer(request.user):
            raise PermissionDenied("This account has no dashboard role.")
        return view(request, *args, **kwargs)

    return login_required(wrapper)


def key_admin_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Login required, then the key admin role."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not is_key_admin(request.user):
            raise PermissionDenied("Only key admins can do this.")
        return view(request, *args, **kwargs)

    return login_required(wrapper)
