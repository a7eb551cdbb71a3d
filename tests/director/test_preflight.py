"""Preflight: each section's checks against the test settings, the runner's skips, the
Preflight page, and the whole command and page against a real running deployment (embedded,
or PostgreSQL + Redis + a Celery worker in the scaled pass), up and down."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.recorder import MigrationRecorder
from django.test import Client

from director.models import PreflightRun
from director.preflight import checks
from director.preflight.context import Context, Credentials
from director.preflight.runner import SECTIONS, Check, Failed, Run, Skip, Status, run_checks
from director.preflight.services import (
    PREFLIGHT_USERNAME,
    preflight_begin,
    preflight_finish,
    preflight_progress,
    preflight_request,
    preflight_sweep_stale,
    preflight_user_ensure,
)
from tests.support.bridge import require_bridge, running_bridge
from tests.support.server import ROOT, RunningServer, free_port, running_server

JOURNEY_STEPS = [
    "j_pair",
    "j_session",
    "j_lens",
    "j_flip",
    "j_still",
    "j_coverage",
    "j_hero",
    "j_ghost",
    "j_stop",
    "j_convex",
    "j_cleanup",
]


def _ctx() -> Context:
    return Context(
        url="http://127.0.0.1:9", run_id="test-run", credentials=Credentials("nobody", "x")
    )


def _outcome(check: Any) -> tuple[Status, str]:
    run = Run(url="http://127.0.0.1:9")
    run_checks([Check("Test", "c", "check", check)], _ctx(), run)
    return run.results[0].status, run.results[0].detail


# --- The runner -------------------------------------------------------------------------------


def test_a_failed_check_makes_the_checks_that_need_it_skip_with_the_reason() -> None:
    def broken(ctx: Context) -> str:
        raise Failed("the camera never registered")

    def not_here(ctx: Context) -> str:
        raise Skip("no Convex configured")

    ran: list[str] = []

    def later(ctx: Context) -> str:
        ran.append("later")
        return "ran"

    run = Run(url="http://127.0.0.1:9")
    run_checks(
        [
            Check("S", "a", "Pair", broken),
            Check("S", "b", "Session", later, needs=("a",)),
            Check("S", "c", "Convex", not_here),
            Check("S", "d", "Read back", later, needs=("c",)),
            Check("S", "e", "Independent", later),
        ],
        _ctx(),
        run,
    )
    outcome = {r.key: (r.status, r.detail) for r in run.results}
    assert outcome["a"] == (Status.FAIL, "the camera never registered")
    assert outcome["b"] == (Status.SKIP, "needs “Pair”, which did not pass")
    assert outcome["c"] == (Status.SKIP, "no Convex configured")
    assert outcome["d"] == (Status.SKIP, "needs “Convex”, which did not pass")
    assert outcome["e"] == (Status.PASS, "ran")
    assert ran == ["later"]
    assert not run.passed
    assert run.counts() == {"pass": 1, "fail": 1, "skip": 3}
    report = run.as_dict()
    assert report["verdict"] == "no-go"
    assert [s["name"] for s in report["sections"]] == list(SECTIONS)


def test_an_unexpected_error_is_a_failure_that_names_it() -> None:
    def crash(ctx: Context) -> str:
        raise KeyError("relay")

    status, detail = _outcome(crash)
    assert status == Status.FAIL
    assert detail == "KeyError: 'relay'"


def test_skips_alone_are_a_go() -> None:
    run = Run(url="http://x")

    def skipped(ctx: Context) -> str:
        raise Skip("embedded default")

    run_checks([Check("S", "a", "A", skipped)], _ctx(), run)
    assert run.passed
    assert run.as_dict()["verdict"] == "go"


# --- Structure and compilation ------------------------------------------------------------------


@pytest.mark.django_db
def test_the_migrations_check_passes_when_every_migration_is_applied() -> None:
    assert checks.migrations_applied(_ctx()).startswith("all ")


@pytest.mark.django_db
def test_a_migration_not_applied_fails_the_migrations_check_and_names_it() -> None:
    executor = MigrationExecutor(connection)
    leaf = next(node for node in executor.loader.graph.leaf_nodes() if node[0] == "director")
    # Rolled back with the test's transaction.
    MigrationRecorder(connection).record_unapplied(*leaf)
    with pytest.raises(Failed, match=rf"1 migration\(s\) not applied: director\.{leaf[1]}"):
        checks.migrations_applied(_ctx())


def test_static_files_are_found_by_the_finders_in_the_embedded_default() -> None:
    assert "htmx and ws extension found" in checks.static_collected(_ctx())


def test_a_manifest_without_the_ws_extension_fails_the_static_check(
    settings: Any, tmp_path: Path
) -> None:
    settings.STATIC_ROOT = tmp_path
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.ManifestStaticFilesStorage"},
    }
    with pytest.raises(Failed, match="collectstatic"):
        checks.static_collected(_ctx())
    manifest = tmp_path / "staticfiles.json"
    paths = {"django_htmx/htmx-2.min.js": "django_htmx/htmx-2.min.abc123.js"}
    manifest.write_text(json.dumps({"paths": paths, "version": "1.1"}))
    with pytest.raises(Failed, match=re.escape("lacks django_htmx/ext/hx-ws-2.min.js")):
        checks.static_collected(_ctx())
    paths["django_htmx/ext/hx-ws-2.min.js"] = "django_htmx/ext/hx-ws-2.min.def456.js"
    manifest.write_text(json.dumps({"paths": paths, "version": "1.1"}))
    assert "htmx and its ws extension" in checks.static_collected(_ctx())


def test_the_deploy_checks_skip_in_the_embedded_default_and_run_in_production(
    settings: Any,
) -> None:
    settings.PRODUCTION = False
    with pytest.raises(Skip, match="embedded default"):
        checks.deploy_checks(_ctx())
    settings.PRODUCTION = True
    settings.SECURE_SSL_REDIRECT = False  # security.W008
    with pytest.raises(Failed, match=r"security\.W008"):
        checks.deploy_checks(_ctx())


def test_the_system_checks_pass_on_this_project() -> None:
    assert checks.system_checks(_ctx()).startswith("no errors")


# --- Integration ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_database_answers() -> None:
    assert "answers" in checks.database(_ctx())


def test_redis_and_celery_skip_in_the_embedded_default(settings: Any) -> None:
    settings.REDIS_URL = ""
    settings.CELERY_TASK_ALWAYS_EAGER = True
    with pytest.raises(Skip, match="no REDIS_URL"):
        checks.redis_ping(_ctx())
    with pytest.raises(Skip, match="embedded mode"):
        checks.celery_worker(_ctx())


def test_a_redis_that_does_not_answer_fails(settings: Any) -> None:
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(Failed, match="does not answer"):
        checks.redis_ping(_ctx())


def test_convex_skips_without_any_configured(settings: Any) -> None:
    settings.CONVEX_URL = ""
    with pytest.raises(Skip, match="no Convex configured"):
        checks.convex_reachable(_ctx())


def test_convex_with_the_real_functions_passes_and_a_dead_one_fails(
    settings: Any, tmp_path: Path
) -> None:
    with running_bridge(tmp_path) as bridge:
        settings.CONVEX_URL = bridge.url
        settings.CONVEX_DEPLOY_KEY = bridge.admin_key
        assert "sessionTimeline, sessionSummary and appendEvents answer" in (
            checks.convex_reachable(_ctx())
        )
    settings.CONVEX_URL = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(Failed, match="Convex unreachable"):
        checks.convex_reachable(_ctx())


def test_convex_without_its_admin_key_fails_and_says_to_set_it(
    settings: Any, tmp_path: Path
) -> None:
    with running_bridge(tmp_path) as bridge:
        settings.CONVEX_URL = bridge.url
        settings.CONVEX_DEPLOY_KEY = ""
        with pytest.raises(Failed, match="CONVEX_DEPLOY_KEY is not set"):
            checks.convex_reachable(_ctx())
        settings.CONVEX_DEPLOY_KEY = "another-deployments-key-0000"
        with pytest.raises(Failed, match="CONVEX_DEPLOY_KEY given is not this deployment's"):
            checks.convex_reachable(_ctx())


# --- Deployment ----------------------------------------------------------------------------------


def test_the_embedded_default_skips_the_production_settings(settings: Any) -> None:
    settings.PRODUCTION = False
    settings.DEBUG = True
    for check in (checks.debug_off, checks.secret_key, checks.allowed_hosts, checks.https_settings):
        with pytest.raises(Skip, match=r"embedded default \(no DJANGO_SECRET_KEY\)"):
            check(_ctx())


def test_production_settings_that_are_wrong_fail_and_name_the_fix(
    settings: Any, tmp_path: Path
) -> None:
    settings.PRODUCTION = True
    settings.DEBUG = True
    with pytest.raises(Failed, match="unset DJANGO_DEBUG"):
        checks.debug_off(_ctx())
    settings.VAR_DIR = tmp_path
    (tmp_path / "dev_secret_key").write_text(settings.SECRET_KEY)
    with pytest.raises(Failed, match="development secret"):
        checks.secret_key(_ctx())
    settings.SECRET_KEY = "short"
    with pytest.raises(Failed, match="weak"):
        checks.secret_key(_ctx())
    settings.ALLOWED_HOSTS = ["*"]
    with pytest.raises(Failed, match="holds '\\*'"):
        checks.allowed_hosts(_ctx())
    settings.SECURE_SSL_REDIRECT = False
    settings.SECURE_HSTS_SECONDS = 0
    with pytest.raises(Failed, match=r"SECURE_SSL_REDIRECT is off; .*SECURE_HSTS_SECONDS is 0"):
        checks.https_settings(_ctx())


def test_production_settings_that_are_right_pass(settings: Any) -> None:
    settings.PRODUCTION = True
    settings.DEBUG = False
    settings.SECRET_KEY = "k" + "".join(chr(ord("a") + i % 26) for i in range(60))
    settings.ALLOWED_HOSTS = ["director.example.com"]
    settings.SECURE_SSL_REDIRECT = True
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = True
    settings.SECURE_HSTS_SECONDS = 31536000
    assert checks.debug_off(_ctx()) == "DEBUG is off"
    assert "61 characters" in checks.secret_key(_ctx())
    assert checks.allowed_hosts(_ctx()) == "director.example.com"
    assert "HSTS 31536000 s" in checks.https_settings(_ctx())


def test_media_storage_is_written_and_cleaned(settings: Any, tmp_path: Path) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"
    assert "wrote and deleted" in checks.media_writable(_ctx())
    assert list((tmp_path / "media").rglob("*.txt")) == []


def test_an_unwritable_media_root_fails(settings: Any, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the media folder should be")
    settings.MEDIA_ROOT = blocker / "media"
    status, detail = _outcome(checks.media_writable)
    assert status == Status.FAIL
    assert "not-a-folder" in detail


def test_free_disk_under_the_floor_fails(settings: Any, tmp_path: Path) -> None:
    settings.MEDIA_ROOT = tmp_path
    settings.MOTIONMIX_PREFLIGHT_MIN_FREE_GIB = 1
    assert "floor 1 GiB" in checks.free_disk(_ctx())
    settings.MOTIONMIX_PREFLIGHT_MIN_FREE_GIB = 10**9
    with pytest.raises(Failed, match="under the 1e\\+09 GiB floor"):
        checks.free_disk(_ctx())


# --- Services and the page ----------------------------------------------------------------------


@pytest.mark.django_db
def test_the_preflight_login_is_staff_with_a_new_password_each_run() -> None:
    first = preflight_user_ensure()
    second = preflight_user_ensure()
    user = get_user_model().objects.get(username=PREFLIGHT_USERNAME)
    assert user.is_staff
    assert first.password != second.password
    assert user.check_password(second.password)
    assert not user.check_password(first.password)


@pytest.mark.django_db
def test_one_run_at_a_time_and_a_run_that_stops_writing_is_failed() -> None:
    run = preflight_request(url="http://127.0.0.1:8000/", requested_by="op")
    assert run.url == "http://127.0.0.1:8000"
    assert preflight_request(url="http://elsewhere", requested_by="op2").pk == run.pk
    assert preflight_begin(run_id=run.pk) is not None
    assert preflight_begin(run_id=run.pk) is None  # claimed once
    from datetime import timedelta

    from django.utils import timezone

    assert preflight_sweep_stale() == 0
    assert preflight_sweep_stale(now=timezone.now() + timedelta(hours=1)) == 1
    run.refresh_from_db()
    assert run.state == PreflightRun.State.FAILED
    assert "interrupted" in run.error
    assert not preflight_progress(run_id=run.pk, results=[])
    untaken = preflight_request(url="http://127.0.0.1:8000/", requested_by="op")
    assert untaken.pk != run.pk
    assert preflight_sweep_stale(now=timezone.now() + timedelta(minutes=5)) == 1
    untaken.refresh_from_db()
    assert untaken.state == PreflightRun.State.FAILED
    assert "No worker took the run" in untaken.error


def _staff_client() -> Client:
    user = get_user_model().objects.create_user(
        username="chief", password="chief-password-123", is_staff=True
    )
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.django_db
def test_the_preflight_page_is_for_staff_only(operator_client: Client) -> None:
    assert operator_client.get("/preflight/").status_code == 403
    assert operator_client.post("/preflight/run").status_code == 403
    assert operator_client.get("/preflight/status.json").status_code == 403
    assert 'href="/preflight/"' not in operator_client.get("/").content.decode()
    staff = _staff_client()
    page = staff.get("/preflight/")
    assert page.status_code == 200
    assert 'data-testid="preflight-start"' in page.content.decode()
    assert 'href="/preflight/"' in staff.get("/").content.decode()


@pytest.mark.django_db
def test_run_preflight_queues_a_run_the_panel_polls_until_its_verdict(
    django_capture_on_commit_callbacks: Any, settings: Any
) -> None:
    settings.CELERY_TASK_ALWAYS_EAGER = True  # the embedded path: the ticker is woken
    from director.preflight.services import PREFLIGHT_WANTED

    PREFLIGHT_WANTED.clear()
    staff = _staff_client()
    with django_capture_on_commit_callbacks(execute=True):
        started = staff.post("/preflight/run", HTTP_HX_REQUEST="true")
    assert started.status_code == 200
    assert PREFLIGHT_WANTED.is_set()
    PREFLIGHT_WANTED.clear()
    run = PreflightRun.objects.get()
    assert run.url == "http://testserver"
    assert run.requested_by == "chief"
    html = started.content.decode()
    assert 'hx-trigger="every 1s"' in html
    assert "Waiting for a worker" in html
    preflight_begin(run_id=run.pk)
    result = {
        "section": "Structure",
        "key": "migrations",
        "name": "Migrations applied",
        "status": "pass",
        "duration_s": 0.02,
        "detail": "all 35 migrations applied",
    }
    preflight_progress(run_id=run.pk, results=[result])
    running = staff.get("/preflight/panel").content.decode()
    assert "Running…" in running and "all 35 migrations applied" in running
    failed = {**result, "section": "Deployment", "key": "disk", "name": "Free disk"}
    failed.update(status="fail", detail="0.5 GiB free")
    preflight_finish(run_id=run.pk, results=[result, failed], passed=False)
    done = staff.get("/preflight/panel").content.decode()
    assert 'data-verdict="no-go"' in done
    assert 'hx-trigger="every 1s"' not in done
    assert 'data-key="disk" data-status="fail"' in done
    assert 'data-testid="preflight-start"' in done  # another run can start


@pytest.mark.django_db
def test_the_status_report_names_the_servers_convex_and_relay(settings: Any) -> None:
    settings.CONVEX_URL = "http://127.0.0.1:3210"
    settings.CONVEX_DEPLOY_KEY = "prod:a-deployments-real-key"
    response = _staff_client().get("/preflight/status.json")
    report = response.json()
    assert report["convex_url"] == "http://127.0.0.1:3210"
    assert report["relay"] == {"running": False, "detail": "no relay in this server process"}
    # A deployment's key is never handed out, not even to staff.
    assert report["convex_bridge_key"] == ""
    assert "a-deployments-real-key" not in response.content.decode()


@pytest.mark.django_db
def test_the_local_bridges_key_is_told_to_staff_only_and_opens_it_for_preflight(
    settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, operator_client: Client
) -> None:
    """`serve --ledger-bridge`: the bridge and its key are known only to the server, and
    preflight, another process, reads them from the status report with a staff login."""
    import director.bridge

    # Overridden first, so what the server's start sets below is undone after the test.
    settings.CONVEX_URL, settings.CONVEX_DEPLOY_KEY = "", ""
    monkeypatch.setattr(director.bridge, "_ledger_bridge", [])
    with running_bridge(tmp_path) as bridge:
        assert bridge.running is not None
        director.bridge.bridge_use_for_ledger(bridge.running)
        assert bridge.admin_key not in repr(bridge.running)

        for outsider in (Client(), operator_client):
            refused = outsider.get("/preflight/status.json")
            assert refused.status_code in (302, 403)
            assert bridge.admin_key not in refused.content.decode()
        staff = _staff_client()
        response = staff.get("/preflight/status.json")
        assert response.json()["convex_bridge_key"] == bridge.admin_key
        assert "no-store" in response["Cache-Control"]

        # The preflight process: no CONVEX_URL of its own, the server's status instead.
        ctx = _ctx()
        ctx._status = response.json()
        settings.CONVEX_URL, settings.CONVEX_DEPLOY_KEY = "", ""
        assert ctx.convex() == (bridge.url, bridge.admin_key)
        assert "appendEvents answer" in checks.convex_reachable(ctx)


def test_run_scaled_children_know_their_key_is_the_local_bridges(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from director.bridge import LOCAL_BRIDGE_URL_ENV, local_bridge_key

    settings.CONVEX_URL = "http://127.0.0.1:4321"
    settings.CONVEX_DEPLOY_KEY = "bridge-key-of-this-run"
    assert local_bridge_key() == ""
    monkeypatch.setenv(LOCAL_BRIDGE_URL_ENV, "http://127.0.0.1:4321")
    assert local_bridge_key() == "bridge-key-of-this-run"
    # CONVEX_URL moved to a deployment: its key is not the bridge's.
    settings.CONVEX_URL = "https://example.convex.cloud"
    assert local_bridge_key() == ""


# --- Against a real deployment ------------------------------------------------------------------


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A deployment as it runs: `make run`'s embedded server with its local Convex bridge, or
    (on PostgreSQL + Redis) the scaled one, with a Celery worker and CONVEX_URL and
    CONVEX_DEPLOY_KEY for all."""
    require_bridge()
    workdir = tmp_path_factory.mktemp("preflight")
    if _scaled():
        with (
            running_bridge(workdir) as bridge,
            running_server(workdir / "srv", extra_env=bridge.env) as server,
        ):
            yield server
        return
    with running_server(workdir) as server:
        # As `make run` starts it: the server runs the bridge and knows its URL and key, nobody
        # else (preflight reads them from the server's status report).
        server.stop_server()
        server.server = server.spawn(
            sys.executable,
            str(ROOT / "manage.py"),
            "serve",
            "--host",
            server.host,
            "--port",
            str(server.port),
            "--ledger-bridge",
            log_name="server",
        )
        server.wait_ready()
        yield server


def _scaled() -> bool:
    import os

    return bool(os.environ.get("REDIS_URL")) and os.environ.get("DATABASE_URL", "").startswith(
        "postgres"
    )


def _preflight(server: RunningServer, *args: str) -> tuple[subprocess.CompletedProcess[str], Any]:
    report = server.workdir / f"preflight-{time.monotonic_ns()}.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "preflight", "--json", str(report), *args],
        env=server.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    data = json.loads(report.read_text()) if report.exists() else None
    return done, data


def _by_key(data: Any) -> dict[str, dict[str, Any]]:
    return {c["key"]: c for s in data["sections"] for c in s["checks"]}


def test_preflight_passes_against_a_running_deployment(deployment: RunningServer) -> None:
    done, data = _preflight(deployment, "--url", deployment.url)
    assert done.returncode == 0, done.stdout + done.stderr + deployment.log()
    checks_run = _by_key(data)
    assert data["verdict"] == "go"
    assert re.fullmatch(r"[0-9a-f-]{36}", data["run_id"])
    assert [s["name"] for s in data["sections"]] == list(SECTIONS)
    for key in JOURNEY_STEPS:
        assert checks_run[key]["status"] == "pass", checks_run[key]
        assert checks_run[key]["duration_s"] >= 0
    assert f"preflight {data['run_id']}" in checks_run["j_session"]["detail"]
    for key in ("apps", "migrations", "static", "system_checks", "database", "convex", "relay"):
        assert checks_run[key]["status"] == "pass", checks_run[key]
    for key in ("login_page", "session_list", "registry", "htmx", "media", "disk"):
        assert checks_run[key]["status"] == "pass", checks_run[key]
    scaled = "pass" if _scaled() else "skip"
    assert checks_run["redis"]["status"] == scaled
    assert checks_run["celery"]["status"] == scaled
    # No DJANGO_SECRET_KEY: the production settings are skipped, with the reason.
    assert checks_run["https"]["status"] == "skip"
    assert "embedded default" in checks_run["https"]["detail"]
    # The table the operator reads: every section, every step, the verdict.
    for section in SECTIONS:
        assert f"\n{section}\n" in done.stdout
    assert "PASS 6. WHIP publish plays back through WHEP" in done.stdout
    assert f"GO: {data['counts']['pass']} passed, 0 failed" in done.stdout
    # Cleaned up: the throwaway session ended, the virtual camera revoked and offline.
    state = _shell(
        deployment,
        "import json; from devices.models import Device; "
        "from director.models import PhotoshootSession as S; "
        f"s = S.objects.get(name='preflight {data['run_id']}'); "
        "d = Device.objects.get(install_id='preflight-1'); "
        "print(json.dumps([s.status, d.status, S.objects.filter(status='live').count()]))",
    )
    assert state == ["ended", "offline", 0]


def test_preflight_against_a_deployment_that_is_down_is_a_no_go(
    deployment: RunningServer,
) -> None:
    started = time.monotonic()
    done, data = _preflight(deployment, "--url", f"http://127.0.0.1:{free_port()}")
    assert done.returncode == 1, done.stdout + done.stderr
    checks_run = _by_key(data)
    assert data["verdict"] == "no-go"
    assert checks_run["relay"]["status"] == "fail"
    assert checks_run["login_page"]["status"] == "fail"
    assert checks_run["j_pair"]["status"] == "fail"
    assert "cannot reach" in checks_run["j_pair"]["detail"]
    for key in JOURNEY_STEPS[1:-1]:
        assert checks_run[key]["status"] == "skip", checks_run[key]
    assert checks_run["j_cleanup"]["status"] == "pass"
    # What does not depend on the server still reports.
    assert checks_run["migrations"]["status"] == "pass"
    assert "NO-GO" in done.stdout
    assert time.monotonic() - started < 30


def test_the_preflight_page_runs_a_real_run_and_shows_the_verdict(
    deployment: RunningServer,
) -> None:
    with httpx.Client(base_url=deployment.url, timeout=10.0) as browser:
        browser.get("/accounts/login/")
        login = browser.post(
            "/accounts/login/",
            data={
                "username": deployment.username,
                "password": deployment.password,
                "csrfmiddlewaretoken": browser.cookies["csrftoken"],
            },
        )
        assert login.status_code == 302
        page = browser.get("/preflight/")
        assert page.status_code == 200 and "Run preflight" in page.text
        started = browser.post(
            "/preflight/run",
            headers={"X-CSRFToken": browser.cookies["csrftoken"], "HX-Request": "true"},
        )
        assert started.status_code == 200, started.text
        assert 'hx-trigger="every 1s"' in started.text
        deadline = time.monotonic() + 120
        while True:
            panel = browser.get("/preflight/panel").text
            if 'data-state="done"' in panel or 'data-state="failed"' in panel:
                break
            assert time.monotonic() < deadline, panel + deployment.log()
            time.sleep(0.5)
    assert 'data-verdict="go"' in panel, panel + deployment.log("celery")
    for key in JOURNEY_STEPS:
        assert f'data-key="{key}" data-status="pass"' in panel, key
    for section in SECTIONS:
        assert f'data-testid="preflight-section">{section}' in panel


def _shell(server: RunningServer, code: str) -> Any:
    done = server.manage("shell", "-c", code)
    return json.loads(done.stdout.strip().splitlines()[-1])
