"""The JSON API under /api/ (django-ninja); its OpenAPI document is served at /api/openapi.json."""
from __future__ import annotations

from ninja import NinjaAPI

api = NinjaAPI(
    title="together-dash API",
    version="1",
    description="Ingest request logs; read usage and errors; reconcile billing; run preflight checks.",
    urls_namespace="api",
)

from together_dash.traffic.api import router as traffic_router  # noqa: E402

api.add_router("/", traffic_router)

from together_dash.diagnostics.api import router as diagnostics_router  # noqa: E402

api.add_router("/", diagnostics_router)

from together_dash.billing.runway_api import router as runway_router  # noqa: E402

api.add_router("/", runway_router)
from together_dash.billing.api import router as billing_router  # noqa: E402

api.add_router("/", billing_router)
