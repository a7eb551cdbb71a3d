"""Settings, read from the environment.

With no environment at all this is the embedded default that `make run` uses: SQLite in WAL
mode, the in-memory channel layer, Celery tasks run in-process, and a development secret kept in
`var/`. Setting `DJANGO_SECRET_KEY` switches to production defaults (DEBUG off, secure cookies,
HSTS), and `DATABASE_URL` / `REDIS_URL` switch on the scaled services.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("MOTIONMIX_VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if not value:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


def _development_secret() -> str:
    # A per-checkout secret so that logins survive a restart of `make run`; never committed.
    path = VAR_DIR / "dev_secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


PRODUCTION = bool(os.environ.get("DJANGO_SECRET_KEY"))
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY") or _development_secret()
# Off unless asked for, even in development: `HOST=0.0.0.0 make run` puts the server on the
# LAN for the phones, and debug pages must not go with it. DJANGO_DEBUG=1 turns it on.
DEBUG = env_bool("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env_list(
    "DJANGO_ALLOWED_HOSTS",
    [] if PRODUCTION else ["localhost", "127.0.0.1", "[::1]", "testserver"],
)
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "django_htmx",
    "ledger",
    "devices",
    "director",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "devices.middleware.DeviceApiErrors",
]

ROOT_URLCONF = "motionmix.urls"
ASGI_APPLICATION = "motionmix.asgi.application"

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
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------

DATABASE_URL = os.environ.get("DATABASE_URL", "")
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL)}
    if os.environ.get("MOTIONMIX_TEST_DB_NAME"):
        # Lets two test runs share one PostgreSQL server without dropping each other's db.
        DATABASES["default"]["TEST"] = {"NAME": os.environ["MOTIONMIX_TEST_DB_NAME"]}
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        # Under ASGI every request runs in a fresh thread; a pool keeps connects off the hot path.
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
            "min_size": 2,
            "max_size": int(os.environ.get("MOTIONMIX_DB_POOL_MAX", "20")),
            "timeout": 10,
        }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("MOTIONMIX_SQLITE_PATH", str(VAR_DIR / "motionmix.sqlite3")),
            "OPTIONS": {
                # WAL lets operator pages read while devices write; IMMEDIATE makes every atomic
                # block take the write lock up front, which is SQLite's form of row locking.
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
            },
        }
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Channels, cache, Celery -----------------------------------------------------------------

REDIS_URL = os.environ.get("REDIS_URL", "")
CHANNEL_PREFIX = os.environ.get("MOTIONMIX_CHANNEL_PREFIX", "motionmix")

if REDIS_URL:
    # redis-py's pool refuses a connection past its cap at once ("Too many connections")
    # rather than waiting; under load a process has many sends in flight at a time (a soak of
    # 30 phones passed the default 100), so the cap is well above that (Redis itself takes
    # 10,000 clients by default).
    REDIS_MAX_CONNECTIONS = int(os.environ.get("MOTIONMIX_REDIS_MAX_CONNECTIONS", "1000"))
    # redis-py 8 times socket reads out after 5 s by default, which is exactly how long the
    # layer's receive blocks in BZPOPMIN: receivers then fail with TimeoutError and what was
    # sent meanwhile is lost (django/channels_redis#422). Wait longer than the block.
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [
                    {
                        "address": REDIS_URL,
                        "socket_timeout": 15,
                        "max_connections": REDIS_MAX_CONNECTIONS,
                    }
                ],
                "prefix": CHANNEL_PREFIX,
                "capacity": 1000,
            },
        }
    }
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": CHANNEL_PREFIX,
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_RESULT_BACKEND = None
# Without Redis there is no worker: tasks run in the calling thread. Services only enqueue from
# on_commit hooks, which run in Django's sync threads, so this never blocks the event loop.
CELERY_TASK_ALWAYS_EAGER = not REDIS_URL
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("MOTIONMIX_CELERY_QUEUE", "motionmix")
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TIMEZONE = "UTC"

# The periodic work: Celery beat in the scaled mode, the server's own ticker otherwise.
MOTIONMIX_EMBEDDED_TICKER = env_bool("MOTIONMIX_EMBEDDED_TICKER", default=not REDIS_URL)

# --- Auth, sessions, security ----------------------------------------------------------------

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "director:session_list"
LOGOUT_REDIRECT_URL = "login"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# HTTPS is the production default; the development server speaks plain HTTP on the LAN.
SESSION_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", default=PRODUCTION)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", default=PRODUCTION)
SECURE_HSTS_SECONDS = int(os.environ.get("DJANGO_HSTS_SECONDS", "31536000" if PRODUCTION else "0"))
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_SECONDS > 0
SECURE_HSTS_PRELOAD = env_bool("DJANGO_HSTS_PRELOAD", default=False)
# Preloading HSTS binds the whole domain and its subdomains for months and cannot be undone
# quickly, so it is an explicit opt-in (DJANGO_HSTS_PRELOAD=1), not something the check forces.
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
if env_bool("DJANGO_BEHIND_PROXY", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Device calls and still uploads are bounded by the API itself; this bounds form posts.
DATA_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024

# --- I18n, static ------------------------------------------------------------------------------

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(os.environ.get("MOTIONMIX_STATIC_ROOT", BASE_DIR / "staticfiles"))
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # WhiteNoise warns on every start otherwise
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        # Production serves hashed, compressed files from `collectstatic`; development serves
        # the sources straight from the apps, with nothing to collect.
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if PRODUCTION
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}
WHITENOISE_USE_FINDERS = not PRODUCTION
MEDIA_ROOT = Path(os.environ.get("MOTIONMIX_MEDIA_ROOT", BASE_DIR / "media"))
MEDIA_URL = "media/"

# --- MotionMix ---------------------------------------------------------------------------------

# Devices beat this often; three missed beats mark a device offline.
MOTIONMIX_HEARTBEAT_INTERVAL_S = float(os.environ.get("MOTIONMIX_HEARTBEAT_INTERVAL_S", "2"))
MOTIONMIX_OFFLINE_AFTER_BEATS = 3
# How long a pairing code stays valid before it rotates by itself.
MOTIONMIX_PAIRING_CODE_TTL_S = int(os.environ.get("MOTIONMIX_PAIRING_CODE_TTL_S", "900"))
# Bad pairing codes allowed from one address within the window before register answers 429.
MOTIONMIX_PAIRING_MAX_FAILURES = 10
MOTIONMIX_PAIRING_FAILURE_WINDOW_S = 60
# How the operator's page coalesces bursts of card updates (heartbeats) before rendering.
MOTIONMIX_PUSH_COALESCE_S = float(os.environ.get("MOTIONMIX_PUSH_COALESCE_S", "0.15"))
# Commands a device has not acknowledged within this time expire (capture: after fire_at).
MOTIONMIX_COMMAND_TTL_S = float(os.environ.get("MOTIONMIX_COMMAND_TTL_S", "15"))
# A capture-all fires this far ahead at least, more when a camera's recent delivery was slow.
MOTIONMIX_CAPTURE_MIN_LEAD_S = float(os.environ.get("MOTIONMIX_CAPTURE_MIN_LEAD_S", "0.3"))
MOTIONMIX_CAPTURE_MAX_LEAD_S = 3.0
# Stills: the largest upload taken, and where files go inside the storage.
MOTIONMIX_STILL_MAX_BYTES = int(os.environ.get("MOTIONMIX_STILL_MAX_BYTES", str(80 * 1024 * 1024)))
MOTIONMIX_STILL_NAME_TEMPLATE = os.environ.get(
    "MOTIONMIX_STILL_NAME_TEMPLATE", "{session}/{device}/{seq:04d}_{lens}.{ext}"
)
# Music: the largest track taken (413 above), and how long its beat analysis may run.
MOTIONMIX_MUSIC_MAX_BYTES = int(os.environ.get("MOTIONMIX_MUSIC_MAX_BYTES", str(100 * 1024 * 1024)))
MOTIONMIX_MUSIC_ANALYSIS_TIMEOUT_S = float(
    os.environ.get("MOTIONMIX_MUSIC_ANALYSIS_TIMEOUT_S", "600")
)
# Ghost's policies run this often for each live session (Celery beat or the server's ticker).
MOTIONMIX_GHOST_POLICY_INTERVAL_S = float(os.environ.get("MOTIONMIX_GHOST_POLICY_INTERVAL_S", "2"))
# Coverage-gap: propose a move when the largest uncovered arc is wider than this.
MOTIONMIX_GHOST_GAP_DEG = float(os.environ.get("MOTIONMIX_GHOST_GAP_DEG", "90"))
# Hero-staleness: offer another camera once the hero has been on air this long.
MOTIONMIX_GHOST_HERO_STALE_S = float(os.environ.get("MOTIONMIX_GHOST_HERO_STALE_S", "45"))
# Cadence: propose a capture-all after this long without a still during a take.
MOTIONMIX_GHOST_CADENCE_S = float(os.environ.get("MOTIONMIX_GHOST_CADENCE_S", "60"))
# Health: a hero below this battery (and not charging) is moved off.
MOTIONMIX_GHOST_LOW_BATTERY_PERCENT = float(
    os.environ.get("MOTIONMIX_GHOST_LOW_BATTERY_PERCENT", "15")
)
# Facing: pose frames older than this say nothing about where the subject faces now.
MOTIONMIX_GHOST_POSE_MAX_AGE_S = float(os.environ.get("MOTIONMIX_GHOST_POSE_MAX_AGE_S", "3"))
# A policy does not repeat an idea within the cooldown, nor within the veto cooldown of a veto.
MOTIONMIX_GHOST_COOLDOWN_S = float(os.environ.get("MOTIONMIX_GHOST_COOLDOWN_S", "30"))
MOTIONMIX_GHOST_VETO_COOLDOWN_S = float(os.environ.get("MOTIONMIX_GHOST_VETO_COOLDOWN_S", "120"))
# How long a proposal waits on the banner for a decision (autopilot: before it is carried out).
MOTIONMIX_GHOST_TTL_S = float(os.environ.get("MOTIONMIX_GHOST_TTL_S", "10"))
# The hero feed (director/hero/). ICE servers for a real LAN or TURN, as JSON:
# [{"urls": ["turn:turn.example:3478"], "username": "...", "credential": "..."}]. None by default:
# cameras and the operator's browser on one network reach the relay directly.
MOTIONMIX_ICE_SERVERS = os.environ.get("MOTIONMIX_ICE_SERVERS", "[]")
# The addresses the relay offers as ICE host candidates (comma-separated). Empty: every
# interface but loopback. A multi-homed machine pins its LAN address here; `make run`, whose
# cameras and browser are on this machine, offers 127.0.0.1.
MOTIONMIX_ICE_HOST_ADDRESSES = env_list("MOTIONMIX_ICE_HOST_ADDRESSES", [])
# A publish that sends no frame for this long is closed (its connection may still look alive).
MOTIONMIX_HERO_NO_MEDIA_S = float(os.environ.get("MOTIONMIX_HERO_NO_MEDIA_S", "5"))
# A publish whose connection has not delivered a first frame this long after its answer.
MOTIONMIX_HERO_CONNECT_S = float(os.environ.get("MOTIONMIX_HERO_CONNECT_S", "15"))
# Card previews: one JPEG per publishing camera about this often, this wide.
MOTIONMIX_HERO_PREVIEW_S = float(os.environ.get("MOTIONMIX_HERO_PREVIEW_S", "1"))
MOTIONMIX_HERO_PREVIEW_WIDTH = int(os.environ.get("MOTIONMIX_HERO_PREVIEW_WIDTH", "320"))
# Each viewer costs one video encode in the relay process; each publisher one decode.
MOTIONMIX_HERO_MAX_VIEWERS = int(os.environ.get("MOTIONMIX_HERO_MAX_VIEWERS", "8"))
MOTIONMIX_HERO_MAX_PUBLISHERS = int(os.environ.get("MOTIONMIX_HERO_MAX_PUBLISHERS", "32"))
# The codec the relay prefers towards viewers: vp8, h264, or empty for the browser's order.
MOTIONMIX_HERO_VIEWER_CODEC = os.environ.get("MOTIONMIX_HERO_VIEWER_CODEC", "").lower()
# Pose: the most frames one POST /api/v1/pose may carry (10 s at 30 fps).
MOTIONMIX_POSE_MAX_FRAMES = int(os.environ.get("MOTIONMIX_POSE_MAX_FRAMES", "300"))
# The address devices are told to reach, printed in the pairing QR code.
MOTIONMIX_PUBLIC_URL = os.environ.get("MOTIONMIX_PUBLIC_URL", "")

# --- Request limits (motionmix/limits.py) and register rate limits (devices/ratelimit.py) -------

# Bodies are capped per endpoint before anything reads them (413 above): a JSON call of the
# device or Ghost API, a pose batch (300 frames of 33 keypoints at a phone's full float
# precision is about 600 KB), stills (MOTIONMIX_STILL_MAX_BYTES), music tracks
# (MOTIONMIX_MUSIC_MAX_BYTES), SDP offers (64 KB); operator pages and the admin take
# DATA_UPLOAD_MAX_MEMORY_SIZE.
MOTIONMIX_MAX_BODY_BYTES = int(os.environ.get("MOTIONMIX_MAX_BODY_BYTES", str(64 * 1024)))
MOTIONMIX_POSE_MAX_BODY_BYTES = int(
    os.environ.get("MOTIONMIX_POSE_MAX_BODY_BYTES", str(1024 * 1024))
)
# Register calls (successful or not) allowed within the window, per client address and per
# install id, before register answers 429. A whole rig pairing at once from one address (a
# NAT) must fit under the first.
MOTIONMIX_REGISTER_MAX_PER_ADDRESS = int(os.environ.get("MOTIONMIX_REGISTER_MAX_PER_ADDRESS", "60"))
MOTIONMIX_REGISTER_MAX_PER_INSTALL = int(os.environ.get("MOTIONMIX_REGISTER_MAX_PER_INSTALL", "10"))
MOTIONMIX_REGISTER_WINDOW_S = int(os.environ.get("MOTIONMIX_REGISTER_WINDOW_S", "60"))
# The reverse proxies in front of the server (addresses or networks, comma-separated). Only a
# request from one of them has its client address taken from X-Forwarded-For (the rightmost
# address that is not a trusted proxy); otherwise every client behind the proxy would share
# its address, and anyone could claim any address by sending the header.
MOTIONMIX_TRUSTED_PROXIES = env_list("MOTIONMIX_TRUSTED_PROXIES", [])

# --- The scaled profile (director/scaled/, `make run-scaled`, docs/deploy.md) -------------------
# What this process serves. "all": everything, the hero relay on this process's own loop (the
# embedded default). "web": pages, API and sockets; WHIP and WHEP go to MOTIONMIX_HERO_RELAY_URL.
# "relay": the one process that holds the hero relay's peers (it serves the same app).
MOTIONMIX_ROLE = os.environ.get("MOTIONMIX_ROLE", "all").strip().lower() or "all"
# Where WHIP (/api/v1/whip...) and WHEP (/sessions/<id>/whep...) go from web processes and from
# the built-in proxy: the relay process, or an external WHIP/WHEP SFU speaking the same paths.
MOTIONMIX_HERO_RELAY_URL = os.environ.get("MOTIONMIX_HERO_RELAY_URL", "").rstrip("/")
# Daphne takes the client's address and scheme from X-Forwarded-For/-Proto only behind a proxy
# (the same switch as SECURE_PROXY_SSL_HEADER above).
MOTIONMIX_BEHIND_PROXY = env_bool("DJANGO_BEHIND_PROXY", default=False)
# A local production rehearsal (`make run-scaled` sets it): production settings served over
# plain HTTP on this machine, so the HTTPS-only settings are off by design and the HTTPS checks
# (Django's --deploy warnings, preflight's) say so instead of failing. Never in a deployment.
MOTIONMIX_LOCAL_REHEARSAL = env_bool("MOTIONMIX_LOCAL_REHEARSAL", default=False)
if MOTIONMIX_LOCAL_REHEARSAL:
    SILENCED_SYSTEM_CHECKS = [
        *SILENCED_SYSTEM_CHECKS,
        "security.W004",  # HSTS
        "security.W008",  # SSL redirect
        "security.W012",  # session cookie secure
        "security.W016",  # CSRF cookie secure
    ]
if MOTIONMIX_ROLE not in {"all", "web", "relay"}:
    raise ImproperlyConfigured(
        f"MOTIONMIX_ROLE is {MOTIONMIX_ROLE!r}; give all, web or relay (docs/deploy.md)."
    )
if MOTIONMIX_ROLE == "web" and not MOTIONMIX_HERO_RELAY_URL:
    raise ImproperlyConfigured(
        "MOTIONMIX_ROLE=web needs MOTIONMIX_HERO_RELAY_URL: the relay process's (or an external "
        "SFU's) http:// address, where WHIP and WHEP are sent."
    )

# The production ledger in Convex. Without CONVEX_URL events wait in the outbox (and say so).
CONVEX_URL = os.environ.get("CONVEX_URL", "")
CONVEX_DEPLOY_KEY = os.environ.get("CONVEX_DEPLOY_KEY", "")
CONVEX_TIMEOUT_S = float(os.environ.get("CONVEX_TIMEOUT_S", "10"))
# How long a commit waits before its flush runs, so a burst of events goes in one batch.
LEDGER_FLUSH_DELAY_S = float(os.environ.get("MOTIONMIX_LEDGER_FLUSH_DELAY_S", "0.2"))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("MOTIONMIX_LOG_LEVEL", "INFO")},
    "loggers": {
        "django.channels.server": {"level": "WARNING"},
        "daphne": {"level": "WARNING"},
        # Every ICE check and DTLS step of every peer is INFO there.
        "aioice": {"level": "WARNING"},
        "aiortc": {"level": "WARNING"},
    },
}
