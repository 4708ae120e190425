"""Security middleware Django 5.2 does not ship: a Content-Security-Policy, and a guard against NUL bytes."""
from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.deprecation import MiddlewareMixin


class ContentSecurityPolicyMiddleware(MiddlewareMixin):
    """Adds settings.CONTENT_SECURITY_POLICY to every response that does not carry its own."""

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        if settings.CONTENT_SECURITY_POLICY:
            response.headers.setdefault("Content-Security-Policy", settings.CONTENT_SECURITY_POLICY)
        return response


class RejectNulBytesMiddleware(MiddlewareMixin):
    """400 for a NUL byte in the path or a query parameter.

    PostgreSQL refuses NUL in text, so a filter like ?model=%00 would reach the database and end in a
    500 on every page and API that filters; no legitimate URL carries one. (Forms reject NUL already.)
    """

    def process_request(self, request: HttpRequest) -> HttpResponse | None:
        values = [request.path, *request.GET.keys(), *(v for _, vs in request.GET.lists() for v in vs)]
        if any("\x00" in value for value in values):
            return JsonResponse({"detail": "NUL bytes are not allowed in URLs."}, status=400)
        return None
