"""The checks of every section but the user journey (journey.py). Each runs in this process,
with the deployment's settings and environment, or over HTTP against the deployment's URL.

"Embedded default" below means no DJANGO_SECRET_KEY (settings.PRODUCTION is false): `make run`,
with a development secret in var/. Production-only checks skip there, with that reason.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from pathlib import Path

import httpx
from django.apps import apps
from django.conf import settings
from django.contrib.staticfiles import finders
from django.contrib.staticfiles.storage import ManifestFilesMixin, staticfiles_storage
from django.core import checks as django_checks
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from director.preflight.context import Context
from director.preflight.runner import Check, Failed, Skip

# The vendored htmx and its WebSocket extension, as django-htmx ships them.
HTMX_FILES = ("django_htmx/htmx-2.min.js", "django_htmx/ext/hx-ws-2.min.js")
EMBEDDED = "embedded default (no DJANGO_SECRET_KEY)"
GIB = 1024**3
PING_S = 1.0


def _production() -> bool:
    return bool(getattr(settings, "PRODUCTION", False))


def min_free_gib() -> float:
    """Free disk below this under MEDIA_ROOT fails (MOTIONMIX_PREFLIGHT_MIN_FREE_GIB, 2)."""
    return float(
        getattr(settings, "MOTIONMIX_PREFLIGHT_MIN_FREE_GIB", None)
        or os.environ.get("MOTIONMIX_PREFLIGHT_MIN_FREE_GIB", "2")
    )


# --- Structure --------------------------------------------------------------------------------


def apps_load(ctx: Context) -> str:
    apps.check_apps_ready()
    apps.check_models_ready()
    labels = [config.label for config in apps.get_app_configs()]
    return f"{len(labels)} apps: {', '.join(labels)}"


def migrations_applied(ctx: Context) -> str:
    executor = MigrationExecutor(connection)
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if plan:
        names = ", ".join(f"{m.app_label}.{m.name}" for m, _ in plan[:8])
        more = f" and {len(plan) - 8} more" if len(plan) > 8 else ""
        raise Failed(
            f"{len(plan)} migration(s) not applied: {names}{more}; run `manage.py migrate`"
        )
    applied = len(executor.loader.applied_migrations)
    return f"all {applied} migrations applied ({connection.vendor})"


def static_collected(ctx: Context) -> str:
    if isinstance(staticfiles_storage, ManifestFilesMixin):
        manifest = Path(settings.STATIC_ROOT) / staticfiles_storage.manifest_name
        if not manifest.is_file():
            raise Failed(f"no {manifest}: run `manage.py collectstatic --noinput`")
        paths = json.loads(manifest.read_text()).get("paths", {})
        missing = [name for name in HTMX_FILES if name not in paths]
        if missing:
            raise Failed(
                f"the manifest lacks {', '.join(missing)}: run `manage.py collectstatic` again"
            )
        return f"{len(paths)} files in {manifest.name}, htmx and its ws extension among them"
    found = [name for name in HTMX_FILES if finders.find(name)]
    if len(found) != len(HTMX_FILES):
        missing = sorted(set(HTMX_FILES) - set(found))
        raise Failed(f"the static finders cannot find {', '.join(missing)}")
    return "served from the apps by the finders (nothing to collect): htmx and ws extension found"


# --- Compilation ------------------------------------------------------------------------------


def _messages(found: list[django_checks.CheckMessage]) -> str:
    return "; ".join(f"{m.id}: {m.msg}" for m in found[:6])


def system_checks(ctx: Context) -> str:
    found = django_checks.run_checks()
    errors = [m for m in found if m.level >= django_checks.ERROR]
    if errors:
        raise Failed(f"{len(errors)} error(s): {_messages(errors)}")
    warnings = [m for m in found if m.level == django_checks.WARNING]
    if warnings:
        return f"no errors; {len(warnings)} warning(s): {_messages(warnings)}"
    return "no errors or warnings"


def deploy_checks(ctx: Context) -> str:
    if not _production():
        raise Skip(f"{EMBEDDED}: the --deploy checks are for production")
    found = django_checks.run_checks(include_deployment_checks=True, tags=["security"])
    serious = [m for m in found if m.level >= django_checks.WARNING and not m.is_silenced()]
    if serious:
        raise Failed(f"{len(serious)} problem(s): {_messages(serious)}")
    return "the security --deploy checks find nothing"


# --- Integration ------------------------------------------------------------------------------


def database(ctx: Context) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        (one,) = cursor.fetchone()
    if one != 1:
        raise Failed(f"SELECT 1 returned {one!r}")
    name = settings.DATABASES["default"]["NAME"]
    return f"{connection.vendor} ({name}) answers"


def redis_ping(ctx: Context) -> str:
    if not settings.REDIS_URL:
        raise Skip("embedded default: no REDIS_URL (in-memory channel layer, local cache)")
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=3, socket_connect_timeout=3)
    try:
        if not client.ping():
            raise Failed("PING did not answer PONG")
    except redis.RedisError as exc:
        raise Failed(f"Redis at {settings.REDIS_URL} does not answer: {exc}") from None
    finally:
        client.close()
    return "PING answered"


def celery_worker(ctx: Context) -> str:
    if settings.CELERY_TASK_ALWAYS_EAGER:
        raise Skip(
            "embedded mode: no Celery worker; tasks run in-process and the server's ticker "
            "does the periodic work"
        )
    from motionmix.celery import app

    queue = settings.CELERY_TASK_DEFAULT_QUEUE
    pongs = app.control.ping(timeout=PING_S) or []
    answered = [name for reply in pongs for name in reply]
    # Workers of other deployments may share the broker (and a host name): a list of replies,
    # not a dict by name, and only a worker consuming our queue counts.
    replies = (
        app.control.broadcast("active_queues", reply=True, timeout=PING_S, limit=len(pongs))
        if pongs
        else []
    )
    ours = sorted(
        name
        for reply in replies or []
        for name, queues in reply.items()
        if any(q.get("name") == queue for q in queues or [])
    )
    if not ours:
        others = f" ({len(answered)} other worker(s) answered)" if answered else ""
        raise Failed(
            f"no Celery worker consuming the queue “{queue}” answered a ping within "
            f"{PING_S:g} s{others}: start `celery -A motionmix worker -Q {queue}` "
            "(and one `celery -A motionmix beat` for the whole deployment)"
        )
    return f"{len(ours)} worker(s) on “{queue}” answered a ping: {', '.join(ours)}"


def convex_reachable(ctx: Context) -> str:
    url, key = ctx.convex()
    if not url:
        raise Skip("no Convex configured: CONVEX_URL is not set and the server runs no bridge")
    from ledger.convex import ConvexLedger, SyncError

    ledger = ConvexLedger(url, deploy_key=key)
    probe = f"preflight-{ctx.run_id}"
    try:
        timeline = ledger.session_timeline(probe)
        ledger.session_summary(probe)
        appended = ledger.append_events([])
    except SyncError as exc:
        raise Failed(f"Convex at {url}: {exc}") from None
    if timeline:
        raise Failed(f"sessionTimeline returned {len(timeline)} event(s) for a session never made")
    if appended != {"inserted": 0, "duplicates": 0}:
        raise Failed(f"appendEvents of nothing answered {appended}")
    return f"{url}: sessionTimeline, sessionSummary and appendEvents answer"


def relay_up(ctx: Context) -> str:
    relay = ctx.server_status().get("relay") or {}
    if not relay.get("running"):
        raise Failed(f"the server reports no running hero relay: {relay.get('detail', relay)}")
    # The WHIP endpoint is mounted and refuses a publish without a device token.
    response = ctx.client.post(
        "/api/v1/whip", content=b"", headers={"Content-Type": "application/sdp"}
    )
    if response.status_code != 401:
        raise Failed(f"POST /api/v1/whip without a token answered {response.status_code}, not 401")
    return (
        f"relay running: {relay.get('publishers', 0)} publisher(s), "
        f"{relay.get('viewers', 0)} viewer(s); WHIP endpoint answers"
    )


# --- Content ----------------------------------------------------------------------------------

_SCRIPT = re.compile(r'<script\b[^>]*\bsrc="(?P<src>[^"]+)"', re.IGNORECASE)


def _page(ctx: Context, path: str, marker: str, *, login: bool = True) -> httpx.Response:
    client = ctx.operator() if login else httpx.Client(base_url=ctx.url, timeout=ctx.timeout_s)
    try:
        response = client.get(path)
    finally:
        if not login:
            client.close()
    if response.status_code != 200:
        raise Failed(f"GET {path} answered {response.status_code}")
    if marker not in response.text:
        raise Failed(f"GET {path} answered 200 without {marker!r}")
    return response


def login_page(ctx: Context) -> str:
    response = _page(ctx, "/accounts/login/", 'name="csrfmiddlewaretoken"', login=False)
    return f"renders ({len(response.content)} bytes)"


def session_list_page(ctx: Context) -> str:
    response = _page(ctx, "/", "Photoshoot sessions")
    rows = response.text.count('data-testid="session-open"')
    return f"renders after logging in, {rows} session(s) listed"


def registry_page(ctx: Context) -> str:
    response = _page(ctx, "/registry/", "Camera registry")
    ctx.notes["registry_html"] = response.text
    return f"renders ({len(response.content)} bytes)"


def htmx_served(ctx: Context) -> str:
    page = ctx.notes.get("registry_html") or _page(ctx, "/registry/", "Camera registry").text
    sources = [m["src"] for m in _SCRIPT.finditer(page)]
    wanted = {
        "htmx": [s for s in sources if "htmx" in s and "/ext/" not in s],
        "ws extension": [s for s in sources if "/ext/" in s and "ws" in s],
    }
    shown = []
    for what, found in wanted.items():
        if not found:
            raise Failed(f"the page has no <script src> for the {what} (scripts: {sources})")
        response = ctx.client.get(found[0])
        kind = response.headers.get("content-type", "")
        if response.status_code != 200 or not response.content or "javascript" not in kind:
            raise Failed(
                f"{found[0]} answered {response.status_code}, {len(response.content)} bytes, "
                f"{kind or 'no content type'}"
            )
        shown.append(f"{found[0]} ({len(response.content)} bytes)")
    return "; ".join(shown)


# --- Deployment -------------------------------------------------------------------------------


def debug_off(ctx: Context) -> str:
    if settings.DEBUG:
        if not _production():
            raise Skip(f"{EMBEDDED}: DEBUG is on (DJANGO_DEBUG=1), allowed in development")
        raise Failed("DEBUG is on in production: unset DJANGO_DEBUG")
    return "DEBUG is off"


def secret_key(ctx: Context) -> str:
    if not _production():
        raise Skip(f"{EMBEDDED}: a per-checkout development secret in var/")
    key = settings.SECRET_KEY
    dev = Path(settings.VAR_DIR) / "dev_secret_key"
    if dev.is_file() and dev.read_text().strip() == key:
        raise Failed("SECRET_KEY is the development secret from var/: set DJANGO_SECRET_KEY")
    if len(key) < 50 or len(set(key)) < 5 or key.startswith("django-insecure"):
        raise Failed("SECRET_KEY is weak: use at least 50 random characters")
    return f"set from DJANGO_SECRET_KEY ({len(key)} characters)"


def allowed_hosts(ctx: Context) -> str:
    hosts = list(settings.ALLOWED_HOSTS)
    if not _production():
        raise Skip(f"{EMBEDDED}: local hosts only ({', '.join(hosts)})")
    if not hosts:
        raise Failed("ALLOWED_HOSTS is empty: set DJANGO_ALLOWED_HOSTS to the public host names")
    if "*" in hosts:
        raise Failed("ALLOWED_HOSTS holds '*': name the public host names in DJANGO_ALLOWED_HOSTS")
    return ", ".join(hosts)


def https_settings(ctx: Context) -> str:
    if not _production():
        raise Skip(f"{EMBEDDED}: plain HTTP on the LAN")
    if settings.MOTIONMIX_LOCAL_REHEARSAL:
        raise Skip("a local rehearsal (`make run-scaled`): plain HTTP on this machine by design")
    wrong = []
    if not settings.SECURE_SSL_REDIRECT:
        wrong.append("SECURE_SSL_REDIRECT is off")
    if not settings.SESSION_COOKIE_SECURE:
        wrong.append("SESSION_COOKIE_SECURE is off")
    if not settings.CSRF_COOKIE_SECURE:
        wrong.append("CSRF_COOKIE_SECURE is off")
    if settings.SECURE_HSTS_SECONDS < 86400:
        wrong.append(f"SECURE_HSTS_SECONDS is {settings.SECURE_HSTS_SECONDS} (under a day)")
    if wrong:
        raise Failed("; ".join(wrong))
    return f"SSL redirect, secure cookies, HSTS {settings.SECURE_HSTS_SECONDS} s"


def media_writable(ctx: Context) -> str:
    name = default_storage.save(
        f"preflight/{ctx.run_id}-{uuid.uuid4().hex[:6]}.txt", ContentFile(b"preflight\n")
    )
    try:
        if not default_storage.exists(name):
            raise Failed(f"{name} was saved but cannot be found")
    finally:
        default_storage.delete(name)
    if default_storage.exists(name):
        raise Failed(f"{name} could not be deleted")
    return f"wrote and deleted a file under {settings.MEDIA_ROOT}"


def free_disk(ctx: Context) -> str:
    root = Path(settings.MEDIA_ROOT)
    while not root.exists() and root != root.parent:
        root = root.parent
    usage = shutil.disk_usage(root)
    free, floor = usage.free / GIB, min_free_gib()
    if free < floor:
        raise Failed(
            f"{free:.2f} GiB free under {settings.MEDIA_ROOT}, under the {floor:g} GiB floor "
            "(MOTIONMIX_PREFLIGHT_MIN_FREE_GIB): stills need room"
        )
    return f"{free:.1f} GiB free of {usage.total / GIB:.1f} GiB (floor {floor:g} GiB)"


def _checks(section: str, *items: tuple[str, str, object]) -> list[Check]:
    return [Check(section, key, name, run) for key, name, run in items]  # type: ignore[arg-type]


SECTION_CHECKS: dict[str, list[Check]] = {
    "Structure": _checks(
        "Structure",
        ("apps", "Installed apps load", apps_load),
        ("migrations", "Migrations applied", migrations_applied),
        ("static", "Static files collected", static_collected),
    ),
    "Compilation": _checks(
        "Compilation",
        ("system_checks", "Django system checks", system_checks),
        ("deploy_checks", "Deployment checks (--deploy)", deploy_checks),
    ),
    "Integration": _checks(
        "Integration",
        ("database", "Database", database),
        ("redis", "Redis", redis_ping),
        ("celery", "Celery worker", celery_worker),
        ("convex", "Convex and its functions", convex_reachable),
        ("relay", "Hero relay", relay_up),
    ),
    "Content": _checks(
        "Content",
        ("login_page", "Login page", login_page),
        ("session_list", "Session list", session_list_page),
        ("registry", "Device registry", registry_page),
        ("htmx", "Vendored htmx and ws extension", htmx_served),
    ),
    "Deployment": _checks(
        "Deployment",
        ("debug", "DEBUG off", debug_off),
        ("secret", "Secret key", secret_key),
        ("hosts", "Allowed hosts", allowed_hosts),
        ("https", "HTTPS settings", https_settings),
        ("media", "Media storage writable", media_writable),
        ("disk", "Free disk", free_disk),
    ),
}
