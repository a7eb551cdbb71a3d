"""The outbox against the real Convex functions, run by the local bridge."""

from __future__ import annotations

import http.server
import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import cache
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction
from django.utils import timezone

import ledger
from ledger.convex import ConvexLedger, SyncError
from ledger.models import ProductionEvent, Sequence
from ledger.selectors import ledger_status
from ledger.sync import FLUSH_WANTED, OUTAGE_KEY, outbox_claim, outbox_flush
from tests.support.bridge import Bridge, running_bridge
from tests.support.requirements import require_redis

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def bridge(tmp_path: Path, settings: Any) -> Iterator[Bridge]:
    with running_bridge(tmp_path) as running:
        settings.CONVEX_URL = running.url
        settings.CONVEX_DEPLOY_KEY = running.admin_key
        yield running


def _record(n: int, *, session_id: uuid.UUID | None = None, start: int = 0) -> list[str]:
    ids = []
    for i in range(n):
        with transaction.atomic():
            event = ledger.record(
                type="device.online",
                session_id=session_id,
                device_id=uuid.uuid4(),
                payload={"offline_for_s": float(start + i)},
            )
        ids.append(str(event.event_id))
    return ids


def _timeline(stream: str) -> list[Any]:
    client = ConvexLedger()
    rows: list[Any] = []
    after = None
    while True:
        page = client.session_timeline(stream, after_seq=after)
        if not page:
            return rows
        rows += page
        after = int(page[-1]["seq"])


def _flush_until_done(deadline_s: float = 30.0) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        outbox_flush()
        if not ProductionEvent.objects.exclude(status=ProductionEvent.Status.SYNCED).exists():
            return
        time.sleep(0.1)
    raise AssertionError(f"still unsynced: {ledger_status()}")


@pytest.mark.django_db
def test_recorded_events_reach_convex_in_seq_order(bridge: Bridge) -> None:
    session = uuid.uuid4()
    fleet_ids = _record(3)
    session_ids = _record(5, session_id=session)

    result = outbox_flush()

    assert (result.sent, result.inserted, result.duplicates) == (8, 8, 0)
    timeline = _timeline(str(session))
    assert [row["eventId"] for row in timeline] == session_ids
    assert [row["seq"] for row in timeline] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert timeline[2]["payload"] == {"offline_for_s": 2.0}
    assert timeline[0]["type"] == "device.online"
    assert [row["eventId"] for row in _timeline("fleet")] == fleet_ids
    assert set(ProductionEvent.objects.values_list("status", flat=True)) == {"synced"}
    assert ledger_status().state == "synced"


@pytest.mark.django_db
def test_a_burst_while_the_bridge_is_down_arrives_once_and_in_order(bridge: Bridge) -> None:
    session = uuid.uuid4()
    bridge.stop()
    ids = _record(500, session_id=session)

    result = outbox_flush()

    assert result.sent == 0 and result.retrying == 100
    assert "unreachable" in result.errors[0]
    assert result.outage_until > time.time()
    waiting = ProductionEvent.objects.filter(status=ProductionEvent.Status.PENDING)
    assert waiting.count() == 500
    assert waiting.filter(attempts=1).count() == 100
    assert ledger_status().state == "waiting"

    # While Convex is backed off, a flush claims nothing and calls nothing.
    again = outbox_flush()
    assert (again.batches, again.retrying, again.outage_until) == (0, 0, result.outage_until)
    assert waiting.filter(attempts=1).count() == 100

    bridge.start()  # the same port and data file
    _flush_until_done()

    timeline = _timeline(str(session))
    assert [row["eventId"] for row in timeline] == ids
    assert [int(row["seq"]) for row in timeline] == list(range(1, 501))


@pytest.mark.django_db
def test_a_flush_that_dies_mid_batch_is_taken_back_without_duplicates(bridge: Bridge) -> None:
    session = uuid.uuid4()
    ids = _record(150, session_id=session)
    claimed = outbox_claim(limit=100)
    # The crash: Convex got the batch, but the flush died before it marked the rows.
    ConvexLedger().append_events(
        [
            {
                "eventId": str(e.event_id),
                "sessionId": e.stream,
                "seq": float(e.seq),
                "type": e.type,
                "occurredAt": e.occurred_at.timestamp(),
                "payload": e.payload,
            }
            for e in claimed
        ]
    )
    assert outbox_flush().sent == 50  # the claimed rows are leased to the dead flush
    ProductionEvent.objects.filter(status=ProductionEvent.Status.SENDING).update(
        claimed_at=timezone.now() - timedelta(minutes=5)
    )

    result = outbox_flush()

    assert (result.sent, result.inserted, result.duplicates) == (100, 0, 100)
    assert [row["eventId"] for row in _timeline(str(session))] == ids


@pytest.mark.django_db
def test_an_event_convex_refuses_is_marked_failed_and_the_others_go_on(bridge: Bridge) -> None:
    session = uuid.uuid4()
    before = _record(2, session_id=session)
    # Written past ledger.record's checks, as an older release or a bad migration might.
    bad = ProductionEvent.objects.create(
        stream=str(session),
        session_id=session,
        seq=3,
        type="Not A Type!",
        occurred_at=timezone.now(),
        payload={},
    )
    Sequence.objects.filter(stream=str(session)).update(last_seq=3)
    after = _record(2, session_id=session)

    result = outbox_flush()

    assert result.failed == 1 and result.sent == 4
    bad.refresh_from_db()
    assert bad.status == ProductionEvent.Status.FAILED
    assert "type" in bad.last_error.lower()
    assert [row["eventId"] for row in _timeline(str(session))] == before + after
    status = ledger_status()
    assert status.state == "failing" and status.failed == 1
    assert status.last_error == bad.last_error


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("", "CONVEX_DEPLOY_KEY is not set"),
        ("not-the-bridges-admin-key-1234", "the CONVEX_DEPLOY_KEY given is not this deployment's"),
    ],
    ids=["no key", "wrong key"],
)
def test_without_the_admin_key_convex_refuses_and_every_event_waits_in_the_outbox(
    bridge: Bridge, settings: Any, capsys: pytest.CaptureFixture[str], key: str, why: str
) -> None:
    session = uuid.uuid4()
    ids = _record(120, session_id=session)  # two batches
    settings.CONVEX_DEPLOY_KEY = key

    with pytest.raises(SyncError) as refused:
        ConvexLedger().append_events([])
    # A configuration to fix, not a bad event: retried, never marked failed.
    assert not refused.value.permanent
    assert why in str(refused.value)
    assert "set CONVEX_DEPLOY_KEY" in str(refused.value)
    assert "Could not find public function for 'production:appendEvents'" in str(refused.value)

    result = outbox_flush()

    assert (result.sent, result.failed, result.retrying) == (0, 0, 100)
    assert why in result.errors[0]
    rows = ProductionEvent.objects.all()
    assert rows.count() == 120
    assert set(rows.values_list("status", flat=True)) == {ProductionEvent.Status.PENDING}
    assert all(why in row.last_error for row in rows.filter(attempts=1))
    status = ledger_status()
    assert (status.state, status.waiting, status.failed) == ("waiting", 120, 0)
    assert "CONVEX_DEPLOY_KEY" in status.last_error
    cache.delete(OUTAGE_KEY)  # the backoff, not the key, would hold the next flush back
    call_command("ledger_sync", "--once")
    out, err = capsys.readouterr()
    assert "sent 0" in out and "failed 0" in out and "120 waiting" in out
    assert why in err
    if key:
        assert key not in err and all(key not in row.last_error for row in rows)

    # Nothing reached Convex. Then the key is set (and the sync restarted): all of it goes.
    settings.CONVEX_DEPLOY_KEY = bridge.admin_key
    assert _timeline(str(session)) == []
    cache.delete(OUTAGE_KEY)
    _flush_until_done()
    assert [row["eventId"] for row in _timeline(str(session))] == ids
    assert ledger_status().state == "synced"


class _DoorAnswer(http.server.BaseHTTPRequestHandler):
    """A deployment that refuses the admin key at the door, with an HTTP status of its own."""

    status = 401

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps({"code": "BadAdminKey", "message": "The admin key is invalid"}).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.mark.parametrize("status", [401, 403])
def test_a_key_refused_with_an_http_status_is_transient_and_says_what_to_set(
    status: int,
) -> None:
    handler = type("Door", (_DoorAnswer,), {"status": status})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        with pytest.raises(SyncError) as refused:
            ConvexLedger(url, deploy_key="prod:an-old-key").append_events([])
    finally:
        server.shutdown()
        server.server_close()
    assert not refused.value.permanent
    assert "not this deployment's" in str(refused.value)
    assert f"{status} BadAdminKey" in str(refused.value)
    assert "an-old-key" not in str(refused.value)


@pytest.mark.django_db
def test_without_convex_events_wait_in_the_outbox(settings: Any) -> None:
    settings.CONVEX_URL = ""
    _record(3)

    assert outbox_flush().sent == 0
    status = ledger_status()
    assert (status.state, status.waiting) == ("offline", 3)


@pytest.mark.django_db
def test_a_commit_that_records_wakes_the_embedded_flush(
    bridge: Bridge, settings: Any, django_capture_on_commit_callbacks: Any
) -> None:
    settings.CELERY_TASK_ALWAYS_EAGER = True
    FLUSH_WANTED.clear()
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        ledger.record(type="device.online", payload={"offline_for_s": None})
        assert not FLUSH_WANTED.is_set()
    assert FLUSH_WANTED.is_set()


@pytest.mark.django_db
def test_ledger_verify_reports_agreement_and_missing_events(
    bridge: Bridge, capsys: pytest.CaptureFixture[str]
) -> None:
    session = uuid.uuid4()
    _record(4, session_id=session)
    outbox_flush()

    call_command("ledger_verify", str(session))
    assert "in agreement" in capsys.readouterr().out

    _record(1, session_id=session, start=10)  # recorded, not yet sent
    with pytest.raises(CommandError, match="disagree"):
        call_command("ledger_verify", str(session))
    assert "1 missing" in capsys.readouterr().out


@pytest.mark.django_db
def test_the_admin_retries_failed_events(bridge: Bridge, admin_client: Any) -> None:
    _record(1)
    ProductionEvent.objects.update(status=ProductionEvent.Status.FAILED, last_error="boom")
    event = ProductionEvent.objects.get()

    response = admin_client.post(
        "/admin/ledger/productionevent/",
        {"action": "retry_failed", "_selected_action": [event.pk]},
        follow=True,
    )

    assert b"1 failed event(s) queued again" in response.content
    assert outbox_flush().sent == 1
    event.refresh_from_db()
    assert event.status == ProductionEvent.Status.SYNCED


@pytest.mark.django_db(transaction=True)
def test_a_real_celery_worker_on_redis_does_the_flush(bridge: Bridge, tmp_path: Path) -> None:
    redis_url = require_redis()
    if connection.vendor != "postgresql":
        pytest.skip("the worker needs a database another process can open: the scaled pass")
    queue = f"mmtest-{uuid.uuid4().hex[:8]}"
    db = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "REDIS_URL": redis_url,
        **bridge.env,
        "MOTIONMIX_CELERY_QUEUE": queue,
        "MOTIONMIX_VAR_DIR": str(tmp_path),
    }
    worker = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("celery")),
            "-A",
            "motionmix",
            "worker",
            "--pool=solo",
            "-Q",
            queue,
            "--loglevel=WARNING",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        from ledger.tasks import outbox_flush_task

        session = uuid.uuid4()
        ids = _record(20, session_id=session)
        outbox_flush_task.apply_async(queue=queue)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if not ProductionEvent.objects.exclude(status="synced").exists():
                break
            time.sleep(0.2)
        assert not ProductionEvent.objects.exclude(status="synced").exists()
        assert [row["eventId"] for row in _timeline(str(session))] == ids
    finally:
        worker.terminate()
        worker.wait(timeout=20)


@pytest.mark.django_db
def test_ledger_sync_once_sends_and_reports(
    bridge: Bridge, capsys: pytest.CaptureFixture[str]
) -> None:
    _record(3)
    call_command("ledger_sync", "--once")
    assert "sent 3 (new 3, already there 0)" in capsys.readouterr().out
    assert not ProductionEvent.objects.exclude(status="synced").exists()


@pytest.mark.django_db
def test_ledger_sync_without_convex_says_why(settings: Any) -> None:
    settings.CONVEX_URL = ""
    with pytest.raises(CommandError, match="CONVEX_URL is not set"):
        call_command("ledger_sync", "--once")


def test_a_running_server_syncs_its_events_to_convex_outside_the_asgi_process(
    tmp_path: Path,
) -> None:
    """`serve` with Convex configured: the embedded mode's ledger_sync child (or, on Redis,
    the Celery worker) sends what the server records; ledger_verify agrees."""
    import httpx

    from tests.support.api import register_body
    from tests.support.server import running_server

    with (
        running_bridge(tmp_path) as bridge,
        running_server(tmp_path / "srv", extra_env=bridge.env) as server,
    ):
        code = server.pairing_code()
        for i in range(3):
            response = httpx.post(
                f"{server.url}/api/v1/devices/register",
                json=register_body(code, f"srv-{i}"),
                timeout=10,
            )
            assert response.status_code == 201
        deadline = time.monotonic() + 30
        while True:
            verify = subprocess.run(
                [sys.executable, str(ROOT / "manage.py"), "ledger_verify", "fleet"],
                env=server.env,
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=False,
            )
            if verify.returncode == 0:
                break
            assert time.monotonic() < deadline, verify.stdout + verify.stderr
            time.sleep(0.3)
        # The first pairing code, 3 registrations, and as many device.offline events as the
        # sweep has recorded by now (these phones never beat): all of them in Convex.
        counts = re.search(r"(\d+) local, (\d+) in Convex", verify.stdout)
        assert counts is not None and counts[1] == counts[2] and int(counts[1]) >= 4


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    from ledger.sync import backoff_s

    assert backoff_s(1, rng=lambda: 0.0) == 0.25
    assert backoff_s(1, rng=lambda: 1.0) == 0.5
    assert backoff_s(4, rng=lambda: 1.0) == 4.0
    assert backoff_s(30, rng=lambda: 1.0) == 30.0
    assert backoff_s(30, rng=lambda: 0.0) == 15.0
    assert backoff_s(5000, rng=lambda: 1.0) == 30.0  # no overflow after days of outage


@pytest.mark.django_db
def test_a_second_flush_waits_for_the_one_holding_the_lock(bridge: Bridge) -> None:
    from django.core.cache import cache

    from ledger.sync import FLUSH_LOCK_KEY

    _record(3)
    cache.add(FLUSH_LOCK_KEY, "another-worker", 60)

    blocked = outbox_flush()

    assert blocked.busy and blocked.batches == 0
    assert ProductionEvent.objects.filter(status="pending").count() == 3
    cache.delete(FLUSH_LOCK_KEY)
    assert outbox_flush().sent == 3
    assert cache.get(FLUSH_LOCK_KEY) is None  # released after the flush
