"""Access rules for the dashboard's JSON endpoints: answer 401/403 as JSON instead of redirecting."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse

from together_dash.core.roles import is_viewer


def viewer_required_json(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Like viewer_required, but a script fetching data gets a status it can act on, not a login page."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_authenticated:
            return JsonResponse({"detail": "Log in to read dashboard data."}, status=401)
        if not is_viewer(request.user):
            return JsonResponse({"detail": "This account has no dashboard role."}, status=403)
        return view(request, *args, **kwargs)

    return wrapper
