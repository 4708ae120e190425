"""Settings for together-dash, read from the environment.

The first run needs no environment variable at all: SQLite in ./var, DEBUG on, console email,
a filesystem Celery broker and the simulator as upstream. Everything real switches on by env var.
Misconfiguration for production is reported by system checks (together_dash/core/checks.py),
never by an exception at import time; only a value that cannot be read at all (a boolean that is
neither true nor false) stops startup, since no value could be given to the setting.
"""
from __future__ import annotations

import secrets
from decimal import Decimal, InvalidOperation
from pathlib import Path

import environ
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(environ.Env().str("TOGETHER_DASH_VAR_DIR", default=str(BASE_DIR / "var")))

env = environ.Env()

_BOOLEANS = {
    "true": True, "false": False, "1": True, "0": False, "yes": True, "no": False, "on": True, "off": False,
}


def env_bool(name: str, default: bool) -> bool:
    """Read a boolean variable strictly: a typo such as DEBUG=ture is an error, not False."""
    if name not in env.ENVIRON:
        return default
    value = env.ENVIRON[name]
    if value.strip().lower() not in _BOOLEANS:
        accepted = "/".join(_BOOLEANS)
        raise ImproperlyConfigured(f"{name}={value!r} is not a boolean: use one of {accepted} (any case).")
    return _BOOLEANS[value.strip().lower()]


def env_decimal(name: str, default: str) -> Decimal:
    """Read an exact decimal (money, percentages) strictly: "0.5%" or "1,5" is an error, not a guess."""
    value = env.ENVIRON.get(name, default)
    return _decimal_at_least_zero(name, value, value.strip(), "a decimal number (e.g. 0.5)")


def env_usd(name: str, default: str) -> Decimal:
    """Read an amount in USD exactly (a Decimal, never a float; "$1.50" or "1.50"); a typo is an error."""
    value = env.ENVIRON.get(name, default)
    text = value.strip().removeprefix("$")
    return _decimal_at_least_zero(name, value, text, "an amount in USD (e.g. 1.50)")


def _decimal_at_least_zero(name: str, value: str, text: str, what: str) -> Decimal:
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise ImproperlyConfigured(f"{name}={value!r} is not {what}.") from None
    if not number.is_finite() or number < 0:
        raise ImproperlyConfigured(f"{name}={value!r} must be {what} of at least 0.")
    return number


def _kept_locally(name: str, make: callable) -> str:
    """Return a development secret stored under VAR_DIR, creating it on first use."""
    path = VAR_DIR / name
    if not path.exists():
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(make())
        path.chmod(0o600)
    return path.read_text().strip()


DEBUG = env_bool("DEBUG", default=True)

# SECRET_KEY: required when DEBUG is off (check together_dash.E001); kept in ./var in development.
SECRET_KEY_FROM_ENV = "SECRET_KEY" in env.ENVIRON
if SECRET_KEY_FROM_ENV:
    # Read raw: django-environ would take a key starting with "$" for the name of another variable.
    SECRET_KEY = env.ENVIRON["SECRET_KEY"]
elif DEBUG:
    SECRET_KEY = _kept_locally("secret_key", lambda: secrets.token_urlsafe(50))
else:
    SECRET_KEY = secrets.token_urlsafe(50)  # throwaway; the system check refuses to run with it

# Fernet keys for upstream Together secrets, newest first (MultiFernet). Same rule as SECRET_KEY.
FIELD_ENCRYPTION_KEYS_FROM_ENV = "FIELD_ENCRYPTION_KEYS" in env.ENVIRON
if FIELD_ENCRYPTION_KEYS_FROM_ENV:
    FIELD_ENCRYPTION_KEYS = env.list("FIELD_ENCRYPTION_KEYS")
elif DEBUG:
    FIELD_ENCRYPTION_KEYS = [_kept_locally("field_encryption_key", lambda: Fernet.generate_key().decode())]
else:
    FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
SITE_ROOT = env.str("SITE_ROOT", default="http://127.0.0.1:8000")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_celery_beat",
    "ninja",  # serves the API docs' Swagger UI from static files instead of a CDN (CSP: 'self' only)
    "together_dash.core",
    "together_dash.simulator",
    "together_dash.keys",
    "together_dash.traffic",
    "together_dash.proxy",
    "together_dash.catalog",
    "together_dash.jobs",
    "together_dash.billing",
    "together_dash.endpoints",
    "together_dash.budgets",
    "together_dash.pollers",
    "together_dash.datasets",
    "together_dash.diagnostics",
    "together_dash.demo",
    "together_dash.dashboard",
    "together_dash.alerts",
    "together_dash.metrics",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "together_dash.core.middleware.RejectNulBytesMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "together_dash.core.middleware.ContentSecurityPolicyMiddleware",
]

ROOT_URLCONF = "together_dash.urls"
ASGI_APPLICATION = "together_dash.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "together_dash.core.context_processors.branding",
            ],
        },
    },
]

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
}
DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=0))
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web process read while the worker writes; a busy timeout instead of "database is locked".
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CACHES = {"default": env.cache("CACHE_URL", default="locmemcache://")}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"

# Single sign-on (together_dash/dashboard/sso.py, mozilla-django-oidc): on once OIDC_ISSUER, OIDC_CLIENT_ID
# and OIDC_CLIENT_SECRET are all set (check together_dash.W010 names what a half configuration lacks).
# The endpoints come from the issuer's /.well-known/openid-configuration. The OIDC_GROUPS_CLAIM of the
# userinfo answer is matched against OIDC_VIEWER_GROUPS and OIDC_KEY_ADMIN_GROUPS at every sign-in;
# a user in neither signs in to a "no role" page. PASSWORD_LOGIN=false leaves only single sign-on.
OIDC_ISSUER = env.str("OIDC_ISSUER", default="").rstrip("/")
OIDC_CLIENT_ID = env.str("OIDC_CLIENT_ID", default="")
OIDC_CLIENT_SECRET = env.str("OIDC_CLIENT_SECRET", default="")
OIDC_PROVIDER_NAME = env.str("OIDC_PROVIDER_NAME", default="single sign-on")
OIDC_GROUPS_CLAIM = env.str("OIDC_GROUPS_CLAIM", default="groups")
OIDC_VIEWER_GROUPS = env.list("OIDC_VIEWER_GROUPS", default=[])
OIDC_KEY_ADMIN_GROUPS = env.list("OIDC_KEY_ADMIN_GROUPS", default=[])
OIDC_ENABLED = bool(OIDC_ISSUER and OIDC_CLIENT_ID and OIDC_CLIENT_SECRET)
PASSWORD_LOGIN = env_bool("PASSWORD_LOGIN", default=True)
# mozilla-django-oidc's own names for what it reads; the OP endpoints are looked up by sso.py.
OIDC_RP_CLIENT_ID = OIDC_CLIENT_ID
OIDC_RP_CLIENT_SECRET = OIDC_CLIENT_SECRET
OIDC_RP_SIGN_ALGO = env.str("OIDC_SIGN_ALGO", default="RS256")
OIDC_RP_SCOPES = env.str("OIDC_SCOPES", default="openid email profile")
OIDC_USE_PKCE = True
OIDC_TIMEOUT = env.float("OIDC_TIMEOUT", default=10.0)
# Without password login the model backend goes: no form (the admin's included) can check a password.
AUTHENTICATION_BACKENDS = [
    *(["django.contrib.auth.backends.ModelBackend"] if PASSWORD_LOGIN else []),
    *(["together_dash.dashboard.sso.SsoBackend"] if OIDC_ENABLED else []),
] or ["django.contrib.auth.backends.ModelBackend"]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [
    BASE_DIR / "static",
    ("vendor/chart.js", BASE_DIR / "node_modules" / "chart.js" / "dist"),
]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

# Email: console in development; EMAIL_URL (smtp://user:pass@host:port, smtp+tls://...) for real SMTP.
vars().update(env.email_url("EMAIL_URL", default="consolemail://"))
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="together-dash <alerts@localhost>")
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=10)
ALERT_EMAILS = env.list("ALERT_EMAILS", default=[])
# Alerts (together_dash/alerts): when at least ALERT_DIGEST_MIN emails for the same people are pending
# within ALERT_DIGEST_WINDOW_SECONDS, they go out as one digest email.
ALERT_DIGEST_MIN = env.int("ALERT_DIGEST_MIN", default=4)
ALERT_DIGEST_WINDOW_SECONDS = env.int("ALERT_DIGEST_WINDOW_SECONDS", default=60)
# Alert channels (Slack, webhook, PagerDuty): https and public addresses only, unless DEBUG or this is
# on (a receiver on the team's own network, plain http allowed too); never link-local or metadata.
ALERT_CHANNEL_ALLOW_LOCAL = env_bool("ALERT_CHANNEL_ALLOW_LOCAL", default=False)
ALERT_CHANNEL_TIMEOUT = env.float("ALERT_CHANNEL_TIMEOUT", default=10.0)
PAGERDUTY_EVENTS_URL = env.str("PAGERDUTY_EVENTS_URL", default="https://events.pagerduty.com/v2/enqueue")
# The spend_anomaly rule (spend in the last hour over <threshold> times the same hour's 7-day average,
# per upstream key and model) only fires from this much spend in the hour, so tiny spend never pages.
SPEND_ANOMALY_MIN_USD = env_usd("SPEND_ANOMALY_MIN_USD", default="1.00")

# Upstream Together API. With no key, `make run` starts the simulator and points TOGETHER_BASE_URL at it.
TOGETHER_API_KEY = env.str("TOGETHER_API_KEY", default="")
TOGETHER_BASE_URL = env.str("TOGETHER_BASE_URL", default="https://api.together.xyz/v1")
TOGETHER_TIMEOUT = env.float("TOGETHER_TIMEOUT", default=60.0)
TOGETHER_CONNECT_TIMEOUT = env.float("TOGETHER_CONNECT_TIMEOUT", default=5.0)
DEMO_MODE = env_bool("DEMO_MODE", default=False)

# Request logs and rollups (together_dash/traffic): retention and ingest limits.
REQUEST_LOG_RETENTION_DAYS = env.int("REQUEST_LOG_RETENTION_DAYS", default=30)
ROLLUP_MINUTE_RETENTION_DAYS = env.int("ROLLUP_MINUTE_RETENTION_DAYS", default=3)
INGEST_MAX_BYTES = env.int("INGEST_MAX_BYTES", default=5 * 1024 * 1024)
INGEST_MAX_RECORDS = env.int("INGEST_MAX_RECORDS", default=10_000)

# Billing reconciliation (together_dash/billing/reconciliation.py): billed and observed cost of a window
# and product match when they differ by at most max(TOLERANCE_USD, TOLERANCE_PERCENT of the billed cost).
# Observed costs are rounded to 8 places per request, so a few millionths of a dollar always remain.
BILLING_RECONCILE_TOLERANCE_USD = env_decimal("BILLING_RECONCILE_TOLERANCE_USD", "0.000001")
BILLING_RECONCILE_TOLERANCE_PERCENT = env_decimal("BILLING_RECONCILE_TOLERANCE_PERCENT", "0.5")

# The proxy at /v1/ (together_dash/proxy). App keys are checked against a per-process cache,
# so a revoked or expired app key stops working within PROXY_KEY_CACHE_SECONDS.
# PROXY_PASSTHROUGH: clients may send their own Together key, attributed by its fingerprint.
# Request logs wait in a bounded in-memory buffer and are written in batches; when the database is
# down they are held up to PROXY_LOG_BUFFER_SIZE and the rest are dropped and counted.
# PROXY_BODY_SAMPLE_RATE: share of requests (0.0-1.0) whose bodies are kept, redacted and capped.
PROXY_PASSTHROUGH = env_bool("PROXY_PASSTHROUGH", default=False)
PROXY_KEY_CACHE_SECONDS = env.float("PROXY_KEY_CACHE_SECONDS", default=2.0)
PROXY_LOG_BUFFER_SIZE = env.int("PROXY_LOG_BUFFER_SIZE", default=10_000)
PROXY_LOG_BATCH_SIZE = env.int("PROXY_LOG_BATCH_SIZE", default=500)
PROXY_LOG_FLUSH_INTERVAL = env.float("PROXY_LOG_FLUSH_INTERVAL", default=0.2)
PROXY_BODY_SAMPLE_RATE = env.float("PROXY_BODY_SAMPLE_RATE", default=0.0)
PROXY_BODY_SAMPLE_MAX_BYTES = env.int("PROXY_BODY_SAMPLE_MAX_BYTES", default=4096)
# PROXY_MAX_BODY_BYTES: larger request bodies get a 413 and are never forwarded. Files reach Together
# through a redirect to storage, not through /v1, so the largest body the proxy sees is a chat request
# with images inline as base64 (4/3 of their size): 100 MB leaves room for a few of Together's 20 MB
# images and stays far from what one process can hold for many clients.
PROXY_MAX_BODY_BYTES = env.int("PROXY_MAX_BODY_BYTES", default=100 * 1024 * 1024)
# PROXY_UPSTREAM_TRANSPORT: "lean" (proxy/upstream.py, our own: half aiohttp's p99 and CPU at 64 clients,
# BENCHMARKS.md), "aiohttp" (proxy/transport.py, the library alternative, same guarantees) or "httpx"
# (httpx's own pool); bench/upstream_transport.py compares them.
PROXY_UPSTREAM_TRANSPORT = env.str("PROXY_UPSTREAM_TRANSPORT", default="lean")
# Enforced app-key budgets (together_dash/budgets): seconds between the proxy's reads of the shared spend
# counters; an app key over its budget is refused within about this long. 0: the proxy never learns of
# any spend, so nothing is enforced.
PROXY_BUDGET_SYNC_SECONDS = env.float("PROXY_BUDGET_SYNC_SECONDS", default=1.0)

# OpenTelemetry export (together_dash/metrics/otel.py): off until OTEL_EXPORTER_OTLP_ENDPOINT is set (an
# OTLP/HTTP collector, e.g. http://collector:4318). Then one span per proxied request and per ingested
# record, with the GenAI semantic conventions, and the gen_ai.client.* metrics; the SDK's own OTEL_*
# variables (OTEL_SERVICE_NAME, OTEL_EXPORTER_OTLP_HEADERS, OTEL_BSP_MAX_QUEUE_SIZE, ...) apply.
# OTEL_CAPTURE_CONTENT: also export the request and response bodies (redacted, capped at
# PROXY_BODY_SAMPLE_MAX_BYTES); off, no prompt or completion text leaves the dashboard.
OTEL_EXPORTER_OTLP_ENDPOINT = env.str("OTEL_EXPORTER_OTLP_ENDPOINT", default="").strip()
OTEL_CAPTURE_CONTENT = env_bool("OTEL_CAPTURE_CONTENT", default=False)

# Prometheus at /metrics (together_dash/metrics): off until METRICS_TOKEN is set (a 404 and, with DEBUG
# off, check W003); Prometheus sends it as a bearer token. The account's series have a model label for
# the first METRICS_MAX_MODELS models ever used; later ones count under "other".
# PROMETHEUS_MULTIPROC_DIR: every web and proxy process (asgi.py) writes its own series there, so a
# scrape of any one of them counts them all; `manage.py bootstrap` empties it. Empty: each process
# reports only itself.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
METRICS_MAX_MODELS = env.int("METRICS_MAX_MODELS", default=20)
METRICS_MULTIPROC_DIR = env.str("PROMETHEUS_MULTIPROC_DIR", default=str(VAR_DIR / "prometheus"))
if env.str("PROMETHEUS_MULTIPROC_DIR", default=""):
    # Set in the environment, it puts every process that imports prometheus_client (workers, commands)
    # in multiprocess mode, and prometheus_client fails on a folder that does not exist.
    Path(METRICS_MULTIPROC_DIR).mkdir(parents=True, exist_ok=True)

# Pollers (together_dash/pollers): every key is polled concurrently, POLLER_CONCURRENCY at a time; each
# call has POLLER_TIMEOUT seconds, each key POLLER_KEY_DEADLINE for all its calls. A 429 asking to wait
# longer than POLLER_MAX_RETRY_WAIT skips that key until its reset instead of stalling the poll.
POLLER_CONCURRENCY = env.int("POLLER_CONCURRENCY", default=50)
POLLER_TIMEOUT = env.float("POLLER_TIMEOUT", default=20.0)
POLLER_KEY_DEADLINE = env.float("POLLER_KEY_DEADLINE", default=60.0)
POLLER_MAX_RETRY_WAIT = env.float("POLLER_MAX_RETRY_WAIT", default=2.0)
FINETUNE_STUCK_AFTER = env.int("FINETUNE_STUCK_AFTER", default=3600)  # seconds pending or queued
RATE_LIMIT_SNAPSHOT_RETENTION_DAYS = env.int("RATE_LIMIT_SNAPSHOT_RETENTION_DAYS", default=14)

# Celery. The default broker is kombu's filesystem transport: no server needed. It is used through
# core/broker.py, which writes each message whole before a worker can see it.
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    CELERY_BROKER_TRANSPORT = "together_dash.core.broker:Transport"
    _broker_dir = VAR_DIR / "celery-broker"
    for _sub in ("queue", "processed", "control"):
        (_broker_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
    # The filesystem transport has no fanout exchange, so remote control (broadcast) is off.
    CELERY_WORKER_ENABLE_REMOTE_CONTROL = False
elif CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    # Redis has no acknowledgements: a task taken by a worker that died without acking it (SIGKILL, a
    # lost machine) goes back on its queue once unacknowledged for the visibility timeout, and workers
    # look for such tasks every tenth of it (kombu's default: an hour, looked at every 100 s). It must
    # outlast the longest task (process_batch_files: 600 s hard limit) and the longest retry countdown
    # (deliver_notification: 300 s), or a task still running or waiting would be handed out twice.
    _visibility_timeout = env.int("CELERY_BROKER_VISIBILITY_TIMEOUT", default=900)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": _visibility_timeout,
        "unacked_restore_interval": max(1, min(60, _visibility_timeout // 10)),
        "unacked_restore_throttle": 1,
    }
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = TIME_ZONE
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# Production hardening; `manage.py check --deploy` is clean when DEBUG is off and these defaults stand.
BEHIND_TLS_PROXY = env_bool("BEHIND_TLS_PROXY", default=False)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if BEHIND_TLS_PROXY else None
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", default=not DEBUG)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=not DEBUG)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", default=not DEBUG)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
# Every script, style, image and fetch comes from this origin (Chart.js and the API docs' Swagger UI
# are static files), and no page may be framed: an injected <script> or inline handler does not run.
# An empty CONTENT_SECURITY_POLICY turns the header off (together_dash/core/middleware.py).
CONTENT_SECURITY_POLICY = env.str(
    "CONTENT_SECURITY_POLICY",
    default="default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'",
)
# /healthz answers plain HTTP probes from load balancers even when SSL redirect is on.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]

LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"redact": {"()": "together_dash.core.logging.RedactSecretsFilter"}},
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["redact"]},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "httpx": {"level": "WARNING"},
        "httpcore": {"level": "WARNING"},
    },
}
