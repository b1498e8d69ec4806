"""Reverie settings: one file, read from environment variables with embedded-mode defaults.

Every variable read here is documented in README.md (tests/test_settings_docs.py checks it).
"""

from pathlib import Path

import dj_database_url
from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured
from django.utils.csp import CSP

from config.env import (
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_list,
    env_networks,
    env_rate,
    env_str,
)

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("REVERIE_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DJANGO_DEBUG", False)
DATABASE_URL = env_str("DATABASE_URL", "")
# Production mode = a real database (DATABASE_URL). The embedded mode (SQLite file, eager tasks)
# is for `make demo`, `make test` and trying Reverie on a laptop.
PRODUCTION = bool(DATABASE_URL)
SECRET_KEY = env_str("DJANGO_SECRET_KEY", "")
if not SECRET_KEY and PRODUCTION:
    raise ImproperlyConfigured(
        "DJANGO_SECRET_KEY must be set when DATABASE_URL is (production mode): a long random "
        "value, e.g. python -c 'import secrets; print(secrets.token_urlsafe(50))'."
    )
if not SECRET_KEY:
    # Embedded mode only: a fixed development key (sessions of the demo, the test suite).
    SECRET_KEY = "django-insecure-reverie-embedded-key-set-DJANGO_SECRET_KEY-in-production"  # noqa: S105
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

# Transport security: on by default in production (TLS at the proxy or gunicorn), off embedded.
REVERIE_HTTPS = env_bool("REVERIE_HTTPS", PRODUCTION)
SECURE_SSL_REDIRECT = REVERIE_HTTPS
# Load balancers and local probes reach the health endpoint over plain HTTP.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SESSION_COOKIE_SECURE = REVERIE_HTTPS
CSRF_COOKIE_SECURE = REVERIE_HTTPS
SESSION_COOKIE_HTTPONLY = True
SECURE_HSTS_SECONDS = env_int(
    "DJANGO_SECURE_HSTS_SECONDS", 31_536_000 if REVERIE_HTTPS else 0, minimum=0
)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", REVERIE_HTTPS)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", REVERIE_HTTPS)
if env_bool("REVERIE_TRUST_X_FORWARDED_PROTO", False):
    # Only behind a proxy that overwrites the header; otherwise clients could claim HTTPS.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Reverse proxies whose X-Forwarded-For is believed (agents/proxies.py): addresses or networks.
# Empty: the header is ignored and the client is the TCP peer (REMOTE_ADDR), as it must be when
# clients can reach gunicorn directly. Sign-in lockouts and anonymous API throttling use it.
REVERIE_TRUSTED_PROXIES = env_networks("REVERIE_TRUSTED_PROXIES")
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Content Security Policy (Django's own middleware): scripts and styles from this origin only
# (inline style attributes stay allowed for progress bars and htmx's indicator style).
_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF],
    "style-src": [CSP.SELF, CSP.UNSAFE_INLINE],
    "img-src": [CSP.SELF, "data:"],
    "connect-src": [CSP.SELF],
    "font-src": [CSP.SELF],
    "object-src": [CSP.NONE],
    "base-uri": [CSP.SELF],
    "form-action": [CSP.SELF],
    "frame-ancestors": [CSP.NONE],
}
_CSP_MODE = env_choice("REVERIE_CSP", "enforce", ("enforce", "report-only", "off"))
SECURE_CSP = _CSP if _CSP_MODE == "enforce" else {}
SECURE_CSP_REPORT_ONLY = _CSP if _CSP_MODE == "report-only" else {}

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "django_celery_beat",
    "agents",
    "agents.otel",
    "dreams",
    "reviews",
    "rollouts",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "agents.middleware.CurrentWorkspaceMiddleware",
    "agents.throttling.RateLimitHeadersMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

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
                "agents.context_processors.reverie",
            ],
        },
    },
]

VAR_DIR.mkdir(parents=True, exist_ok=True)
(VAR_DIR / "staticfiles").mkdir(exist_ok=True)

if DATABASE_URL:
    DATABASES = {
        "default": dj_database_url.parse(
            DATABASE_URL, conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60)
        )
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(VAR_DIR / "reverie.sqlite3"),
            "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE"},
            # A file, not SQLite's shared in-memory default, so tests see the same locking
            # (writers wait, never "table is locked") as the embedded install.
            "TEST": {"NAME": VAR_DIR / "test.sqlite3"},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = VAR_DIR / "staticfiles"
# Static files are served by the app itself (WhiteNoise), from the finders when not collected.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

# Request bodies: the capture API enforces its own limits (413), so Django's must be higher.
REVERIE_RUN_MAX_BYTES = env_int("REVERIE_RUN_MAX_BYTES", 2 * 1024 * 1024, minimum=1024)
REVERIE_REQUEST_MAX_BYTES = env_int("REVERIE_REQUEST_MAX_BYTES", 20 * 1024 * 1024, minimum=1024)
REVERIE_BATCH_MAX_RUNS = env_int("REVERIE_BATCH_MAX_RUNS", 1000, minimum=1)
DATA_UPLOAD_MAX_MEMORY_SIZE = REVERIE_REQUEST_MAX_BYTES + 1024
# OTLP trace receiver (agents/otel): a trace's run is final once no span arrived for this long.
REVERIE_OTLP_SETTLE_SECONDS = env_int("REVERIE_OTLP_SETTLE_SECONDS", 300, minimum=0)
REVERIE_OTLP_MAX_CONCURRENT = env_int("REVERIE_OTLP_MAX_CONCURRENT", 4, minimum=1)
REVERIE_OTLP_RETRY_AFTER_SECONDS = env_int("REVERIE_OTLP_RETRY_AFTER_SECONDS", 5, minimum=1)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "agents.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # Every API view declares the scope an API key needs (agents/scopes.py).
    "DEFAULT_PERMISSION_CLASSES": ["agents.scopes.DeclaredScope"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "config.api.exception_handler",
    "DEFAULT_PAGINATION_CLASS": "config.api.DefaultPagination",
    # The API speaks JSON only: form encodings drop empty strings and turn "null" into None,
    # which let values past the serializers that the columns then refused (a 500).
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
    "PAGE_SIZE": 50,
    # Per-key rate limits (agents/throttling.py); the config endpoint has its own budget.
    "DEFAULT_THROTTLE_CLASSES": ["agents.throttling.ApiKeyRateThrottle"],
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Reverie API",
    "DESCRIPTION": "Capture agent runs, read dream cycles and proposals, route config versions.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI assets are served locally, never from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "config.api.document_error_responses",
    ],
    "ENUM_NAME_OVERRIDES": {
        "RunStatusEnum": "agents.models.Run.Status",
        "DreamCycleStatusEnum": "dreams.models.DreamCycle.Status",
        "HostedDreamStatusEnum": "dreams.managed.models.HostedDream.Status",
        "MemoryApplicationStatusEnum": "dreams.managed.models.MemoryApplication.Status",
    },
}

# Celery: eager (in-process) unless a Redis broker is configured.
REDIS_URL = env_str("REDIS_URL", "")
# The shared cache (rate limits, login throttling): Redis in production so limits hold across
# gunicorn workers and machines; per-process memory in the embedded mode.
REVERIE_CACHE_URL = env_str("REVERIE_CACHE_URL", REDIS_URL)
if REVERIE_CACHE_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REVERIE_CACHE_URL,
            "KEY_PREFIX": "reverie",
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
# /healthz (config/health.py): broker ping timeout, and how old beat's last run may be (beat
# writes its tasks' last run every few minutes; the rollout check runs every minute).
REVERIE_HEALTH_TIMEOUT_SECONDS = env_float("REVERIE_HEALTH_TIMEOUT_SECONDS", 1.0)
REVERIE_HEALTH_BEAT_MAX_AGE_SECONDS = env_int(
    "REVERIE_HEALTH_BEAT_MAX_AGE_SECONDS", 600, minimum=60
)
# Per-key API rate limits (agents/throttling.py), "N/s|min|hour|day" or "off": every endpoint
# but the config endpoint shares the first; the config endpoint has its own, high budget.
REVERIE_API_RATE_LIMIT = env_rate("REVERIE_API_RATE_LIMIT", "1200/min")
REVERIE_CONFIG_RATE_LIMIT = env_rate("REVERIE_CONFIG_RATE_LIMIT", "60000/min")
# The OTLP trace receiver's own budget per key (agents/otel/views.py), as high as the runs API's.
REVERIE_OTLP_RATE_LIMIT = env_rate("REVERIE_OTLP_RATE_LIMIT", "1200/min")
# Sign-in throttling (agents/login.py): failures per username and client address before a lockout.
REVERIE_LOGIN_MAX_FAILURES = env_int("REVERIE_LOGIN_MAX_FAILURES", 5, minimum=1)
REVERIE_LOGIN_LOCKOUT_SECONDS = env_int("REVERIE_LOGIN_LOCKOUT_SECONDS", 900, minimum=1)
CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_RESULT_BACKEND = None
CELERY_TASK_ALWAYS_EAGER = not REDIS_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
# django-celery-beat's DatabaseScheduler plus a heartbeat for /healthz (config/beat.py).
CELERY_BEAT_SCHEDULER = "config.beat:Scheduler"
CELERY_TIMEZONE = "UTC"
# A web request that enqueues while the broker is down gives up fast; the row waits for beat.
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.5,
}
CELERY_BROKER_CONNECTION_TIMEOUT = 2.0
# Canary checks have their own queue so hour-long replay chunks never delay an automatic halt.
CELERY_TASK_ROUTES = {
    "rollouts.check_rollouts": {"queue": "canary"},
    "rollouts.evaluate_rollout": {"queue": "canary"},
}

# Model gateway (dreams/llm.py).
ANTHROPIC_API_KEY = env_str("ANTHROPIC_API_KEY", "")
ANTHROPIC_BASE_URL = env_str("ANTHROPIC_BASE_URL", "")
# `local`: the optional llama.cpp model behind a loopback Messages adapter (`make local-model`),
# reached as Claude is (ANTHROPIC_BASE_URL, any key); its calls are priced at $0.
REVERIE_MODEL_BACKEND = env_choice(
    "REVERIE_MODEL_BACKEND",
    "anthropic" if ANTHROPIC_API_KEY else "simulated",
    ("anthropic", "simulated", "local"),
)
if REVERIE_MODEL_BACKEND == "local" and not ANTHROPIC_BASE_URL:
    ANTHROPIC_BASE_URL = "http://127.0.0.1:8766"  # `make local-model-serve`
REVERIE_DREAM_MODEL = env_str("REVERIE_DREAM_MODEL", "claude-sonnet-5-5")
REVERIE_REPLAY_MODEL = env_str("REVERIE_REPLAY_MODEL", "claude-sonnet-5-5")
REVERIE_JUDGE_MODEL = env_str("REVERIE_JUDGE_MODEL", "claude-haiku-5-5")
# The simulated user that continues a replay past a divergence (dreams/usersim.py).
REVERIE_SIMULATED_USER_MODEL = env_str("REVERIE_SIMULATED_USER_MODEL", "claude-haiku-5-5")
REVERIE_SIMULATED_USER_MAX_TURNS = env_int("REVERIE_SIMULATED_USER_MAX_TURNS", 8, minimum=1)
REVERIE_SIMULATED_USER_MAX_TOKENS = env_int("REVERIE_SIMULATED_USER_MAX_TOKENS", 300, minimum=16)
# USD per million tokens: input, output, cache read, cache write (5-minute).
REVERIE_MODEL_PRICES = {
    "claude-sonnet-5-5": {"input": 3.0, "output": 15.0, "cache_read": 0.30, "cache_write": 3.75},
    "claude-haiku-5-5": {"input": 1.0, "output": 5.0, "cache_read": 0.10, "cache_write": 1.25},
    "claude-opus-5-5": {"input": 5.0, "output": 25.0, "cache_read": 0.50, "cache_write": 6.25},
    "claude-sonnet-4-6": {"input": 3.0, "output": 15.0, "cache_read": 0.30, "cache_write": 3.75},
    "claude-haiku-4-5": {"input": 1.0, "output": 5.0, "cache_read": 0.10, "cache_write": 1.25},
}

# Gateway behaviour: SDK retries (429/529/5xx/timeouts) and per-request timeout in seconds.
# The local model answers one call at a time on one thread: a long dream call takes ~90 s, and a
# retry of a timed-out call only queues behind it, so it gets a longer timeout and one retry.
_LOCAL_MODEL = REVERIE_MODEL_BACKEND == "local"
REVERIE_MODEL_MAX_RETRIES = env_int(
    "REVERIE_MODEL_MAX_RETRIES", 1 if _LOCAL_MODEL else 3, minimum=0
)
REVERIE_MODEL_TIMEOUT = env_float("REVERIE_MODEL_TIMEOUT", 600.0 if _LOCAL_MODEL else 120.0)
# cache_control on the shared prefix (system + tools) of replay requests.
REVERIE_PROMPT_CACHING = env_bool("REVERIE_PROMPT_CACHING", True)

# Replays and experiments (dreams/replay.py, dreams/experiments.py).
# Replicates per run and arm: 1 on the simulated model and the slow local one, 3 on Claude.
REVERIE_REPLICATES = env_int(
    "REVERIE_REPLICATES", 1 if REVERIE_MODEL_BACKEND in ("simulated", "local") else 3, minimum=1
)
REVERIE_REGRESSION_SAMPLE_SIZE = env_int("REVERIE_REGRESSION_SAMPLE_SIZE", 40, minimum=0)
REVERIE_FIDELITY_THRESHOLD = env_float("REVERIE_FIDELITY_THRESHOLD", 0.9)
# The harness check (dreams/harness.py): the recorded model replays the runs first, no tokens.
REVERIE_HARNESS_CHECK = env_bool("REVERIE_HARNESS_CHECK", True)
REVERIE_HARNESS_FIDELITY_THRESHOLD = env_float(
    "REVERIE_HARNESS_FIDELITY_THRESHOLD", REVERIE_FIDELITY_THRESHOLD
)
REVERIE_UNVERIFIABLE_WARNING_SHARE = env_float("REVERIE_UNVERIFIABLE_WARNING_SHARE", 0.2)
# An experiment with a larger share of failed replays (errors, not verdicts) fails instead of
# making its proposal ready: the replays that worked are not a fair sample.
REVERIE_MAX_FAILED_REPLAY_SHARE = env_float("REVERIE_MAX_FAILED_REPLAY_SHARE", 0.1)
# Significance level of the paired tests and of the early-stop rule (Bonferroni over planned looks).
REVERIE_STATS_ALPHA = env_float("REVERIE_STATS_ALPHA", 0.05)
REVERIE_EARLY_STOP_ALPHA = env_float("REVERIE_EARLY_STOP_ALPHA", 0.05)
# Runs per Celery task (both arms and all replicates of a run stay in one task).
REVERIE_REPLAY_CHUNK_SIZE = env_int("REVERIE_REPLAY_CHUNK_SIZE", 20, minimum=1)
# Extra assistant steps a replay may take beyond the recorded number.
REVERIE_REPLAY_STEP_MARGIN = env_int("REVERIE_REPLAY_STEP_MARGIN", 2, minimum=0)
REVERIE_REPLAY_MAX_TOKENS = env_int("REVERIE_REPLAY_MAX_TOKENS", 1024, minimum=16)
# Message Batches API for replays (cheaper, slower) and its polling interval in seconds.
REVERIE_REPLAY_BATCH_MODE = env_bool("REVERIE_REPLAY_BATCH_MODE", False)
REVERIE_BATCH_POLL_SECONDS = env_float("REVERIE_BATCH_POLL_SECONDS", 30.0)
REVERIE_BATCH_MAX_WAIT_SECONDS = env_float("REVERIE_BATCH_MAX_WAIT_SECONDS", 86400.0)

# Claude Managed Agents connector (dreams/managed/). API keys are never stored in the database:
# REVERIE_MANAGED_API_KEYS maps a key name (usually the Reverie workspace slug) to the name of the
# environment variable holding the Anthropic key, e.g. "northwind=ANTHROPIC_KEY_NORTHWIND,acme=KEY_ACME".
REVERIE_MANAGED_API_KEYS = env_str("REVERIE_MANAGED_API_KEYS", "")
REVERIE_MANAGED_BASE_URL = env_str("REVERIE_MANAGED_BASE_URL", "")
REVERIE_MANAGED_WEBHOOK_SECRET = env_str(
    "REVERIE_MANAGED_WEBHOOK_SECRET", env_str("ANTHROPIC_WEBHOOK_SIGNING_KEY", "")
)
REVERIE_MANAGED_SYNC_MINUTES = env_int("REVERIE_MANAGED_SYNC_MINUTES", 15, minimum=1)
REVERIE_HOSTED_DREAM_MODEL = env_str("REVERIE_HOSTED_DREAM_MODEL", "claude-sonnet-5-5")
REVERIE_HOSTED_DREAM_INSTRUCTIONS = env_str(
    "REVERIE_HOSTED_DREAM_INSTRUCTIONS",
    "Study the failed sessions and update the memory so the agent avoids these failures. "
    "Write general instructions, not copies of one conversation's facts or personal data.",
)
REVERIE_HOSTED_DREAM_MAX_POLLS = env_int("REVERIE_HOSTED_DREAM_MAX_POLLS", 120, minimum=1)

# Outgoing webhooks refuse private and loopback targets unless this is on.
REVERIE_WEBHOOKS_ALLOW_PRIVATE = env_bool("REVERIE_WEBHOOKS_ALLOW_PRIVATE", False)
# Sandbox environments (dreams/environments.py): MCP servers on staging that replays call.
# Their URLs are refused on private, loopback or reserved addresses like webhook targets,
# unless the host (a name, an address or a network such as 10.0.0.0/8) is in this list.
REVERIE_ENVIRONMENT_ALLOWED_HOSTS = env_list("REVERIE_ENVIRONMENT_ALLOWED_HOSTS", [])
# Seconds for one environment request (connect, reset, a tool call, the final check).
REVERIE_ENVIRONMENT_TIMEOUT_SECONDS = env_float("REVERIE_ENVIRONMENT_TIMEOUT_SECONDS", 10.0)

# Dream cycles (dreams/cycles.py and the modules it calls).
REVERIE_DREAM_MAX_RUNS = env_int("REVERIE_DREAM_MAX_RUNS", 200, minimum=1)
REVERIE_DREAM_MAX_DRAFTING_RUNS = env_int("REVERIE_DREAM_MAX_DRAFTING_RUNS", 6, minimum=2)
REVERIE_DREAM_DIAGNOSE_PER_PATTERN = env_int("REVERIE_DREAM_DIAGNOSE_PER_PATTERN", 12, minimum=1)
REVERIE_DREAM_MAX_DOCUMENT_CHARS = env_int("REVERIE_DREAM_MAX_DOCUMENT_CHARS", 20_000, minimum=100)
REVERIE_DREAM_MAX_EDIT_CHARS = env_int("REVERIE_DREAM_MAX_EDIT_CHARS", 2_000, minimum=10)
REVERIE_DREAM_MAX_GROWTH_PCT = env_int("REVERIE_DREAM_MAX_GROWTH_PCT", 20, minimum=0)
REVERIE_DREAM_INJECTION_WORDS = env_int("REVERIE_DREAM_INJECTION_WORDS", 12, minimum=3)
REVERIE_DREAM_LEASE_SECONDS = env_int("REVERIE_DREAM_LEASE_SECONDS", 900, minimum=0)
# A queued cycle or experiment whose task has not started after this long is sent again by
# beat's sweepers (its message was lost: broker down, Redis restarted).
REVERIE_QUEUED_GRACE_SECONDS = env_int("REVERIE_QUEUED_GRACE_SECONDS", 120, minimum=1)
# A running experiment with no replay finished for this long is resumed (its worker died).
REVERIE_EXPERIMENT_STALL_SECONDS = env_int("REVERIE_EXPERIMENT_STALL_SECONDS", 3900, minimum=60)
# A replay slot is claimed just before its model calls; a claim this old (its worker died) is
# taken over by the next chunk that reaches the slot. Longer than one replay can take.
REVERIE_REPLAY_CLAIM_SECONDS = env_int("REVERIE_REPLAY_CLAIM_SECONDS", 1800, minimum=60)
REVERIE_DREAM_SCHEDULE_MINUTES = env_int("REVERIE_DREAM_SCHEDULE_MINUTES", 5, minimum=1)
# Webhook delivery (reviews/notifications.py) and the daily digest.
REVERIE_WEBHOOK_MAX_ATTEMPTS = env_int("REVERIE_WEBHOOK_MAX_ATTEMPTS", 6, minimum=1)
REVERIE_WEBHOOK_TIMEOUT_SECONDS = env_int("REVERIE_WEBHOOK_TIMEOUT_SECONDS", 10, minimum=1)
REVERIE_DIGEST_HOUR = env_int("REVERIE_DIGEST_HOUR", 8, minimum=0)
REVERIE_BASE_URL = env_str("REVERIE_BASE_URL", "http://127.0.0.1:8000")
# Rollouts and canary analysis (rollouts/services.py, rollouts/canary.py).
REVERIE_CANARY_ALPHA = env_float("REVERIE_CANARY_ALPHA", 0.01)
REVERIE_CANARY_MIN_SAMPLE = env_int("REVERIE_CANARY_MIN_SAMPLE", 50, minimum=1)
REVERIE_CANARY_ERROR_CEILING = env_float("REVERIE_CANARY_ERROR_CEILING", 0.10)
# A stage's minimum runs is at least the canary's minimum sample: with fewer, a stage could be
# approved before the canary analysis (and its automatic halt) has looked at it.
REVERIE_ROLLOUT_MIN_RUNS = env_int(
    "REVERIE_ROLLOUT_MIN_RUNS",
    max(100, REVERIE_CANARY_MIN_SAMPLE),
    minimum=REVERIE_CANARY_MIN_SAMPLE,
)
REVERIE_ROLLOUT_MIN_MINUTES = env_int("REVERIE_ROLLOUT_MIN_MINUTES", 30, minimum=0)
REVERIE_ROLLOUT_CHECK_SECONDS = env_int("REVERIE_ROLLOUT_CHECK_SECONDS", 60, minimum=5)
# The config endpoint caches API-key lookups in-process this long (revocation delay).
REVERIE_CONFIG_AUTH_CACHE_SECONDS = env_int("REVERIE_CONFIG_AUTH_CACHE_SECONDS", 10, minimum=0)
# ... and an agent's routing (stable/canary/percent/paused) this long: a halt reaches every
# worker within this bound. 0 = read the routing from the database on every request.
REVERIE_CONFIG_ROUTING_CACHE_SECONDS = env_float("REVERIE_CONFIG_ROUTING_CACHE_SECONDS", 1.0)

EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "reverie@localhost")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("REVERIE_LOG_LEVEL", "INFO")},
    # The SDK's HTTP client logs every request at INFO; model calls are recorded as ModelCall rows.
    # Celery logs every task at INFO, which buries the demo's output when tasks run eagerly.
    "loggers": {
        "httpx2": {"level": "WARNING"},
        "httpcore2": {"level": "WARNING"},
        "celery.app.trace": {"level": "WARNING"},
        # The MCP client logs every session it opens and closes: one per environment replay.
        "mcp": {"level": "WARNING"},
    },
}

# Every periodic task, in one schedule. Beat's DatabaseScheduler writes these entries into its
# tables at start-up (by name), where the admin shows them; the intervals come from settings.
CELERY_BEAT_SCHEDULE = {
    "Start due dream cycles": {
        "task": "dreams.enqueue_due_cycles",
        "schedule": REVERIE_DREAM_SCHEDULE_MINUTES * 60.0,
    },
    "Resume stalled dream cycles": {
        "task": "dreams.resume_stale_cycles",
        "schedule": REVERIE_DREAM_SCHEDULE_MINUTES * 60.0,
    },
    "Resume stalled experiments": {
        "task": "dreams.resume_stale_experiments",
        "schedule": REVERIE_DREAM_SCHEDULE_MINUTES * 60.0,
    },
    "Daily review digest": {
        "task": "reviews.send_daily_digest",
        "schedule": crontab(minute="0", hour=str(REVERIE_DIGEST_HOUR)),
    },
    "Resume overdue webhooks": {"task": "reviews.resume_webhooks", "schedule": 300.0},
    "rollouts.check_rollouts": {
        "task": "rollouts.check_rollouts",
        "schedule": float(REVERIE_ROLLOUT_CHECK_SECONDS),
    },
    "otel.settle_traces": {
        "task": "otel.settle_traces",
        "schedule": float(max(REVERIE_OTLP_SETTLE_SECONDS, 30)),
    },
    # Batch mode: open Message Batches of replays are polled here, never waited on in a task.
    "dreams.poll_replay_batches": {
        "task": "dreams.poll_replay_batches",
        "schedule": max(REVERIE_BATCH_POLL_SECONDS, 1.0),
    },
    "managed-sync-all": {
        "task": "dreams.managed.sync_all",
        "schedule": REVERIE_MANAGED_SYNC_MINUTES * 60.0,
    },
}
