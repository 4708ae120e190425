from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest


def branding(request: HttpRequest) -> dict[str, object]:
    """Expose the few settings every page shows (demo banner, site root, single sign-on)."""
    return {
        "DEMO_MODE": settings.DEMO_MODE,
        "SITE_ROOT": settings.SITE_ROOT,
        "oidc_enabled": settings.OIDC_ENABLED,
        "oidc_provider_name": settings.OIDC_PROVIDER_NAME,
    }
