"""Row locks that cannot deadlock with the foreign-key checks of other transactions.

A service locks a session's row, then appends to the session's ledger stream (its counter
row). Another transaction that already holds that counter and inserted a row pointing at the
session (a still, a proposal) checks the foreign key when it commits (Django's are deferred on
PostgreSQL), which takes FOR KEY SHARE on the session's row. Under FOR UPDATE the two waited on
each other and PostgreSQL killed one: seen under load as a still upload's 500 and a Ghost run
that failed. The services lock FOR NO KEY UPDATE, which a key-share lock does not wait for.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.db import connection, connections, transaction

from director import services
from ledger.models import ProductionEvent
from tests.director.stills_support import ingest, jpeg_bytes
from tests.support.api import register_device

pytestmark = pytest.mark.django_db(transaction=True)

WAIT_S = 15.0


def _waiting_on_a_lock() -> bool:
    with connections["default"].cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
        (count,) = cursor.fetchone()
    return bool(count)


def _thread(target: Callable[[], None], errors: list[BaseException]) -> threading.Thread:
    def run() -> None:
        try:
            target()
        except BaseException as exc:  # reported by the test, not lost in the thread
            errors.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_session_lock_and_a_foreign_key_check_at_commit_do_not_deadlock(
    operator: Any, settings: Any, tmp_path: Path
) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: SQLite takes no row locks; runs in the scaled pass")
    camera = register_device("lock-1", name="Cam 1").device
    session = services.session_create(name="Locks", operator=operator)
    services.session_start(session_id=session.pk, device_ids=[camera.pk])
    holding, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    settings.MEDIA_ROOT = tmp_path / "media"

    def still_then_wait() -> None:
        # Holds the session stream's counter, and a still whose row points at the session.
        with transaction.atomic():
            ingest(camera, jpeg_bytes(), captured_at=time.time())
            holding.set()
            release.wait(WAIT_S)

    def ghost_mode() -> None:
        # Locks the session's row, then waits for the counter.
        services.session_ghost_mode_set(session_id=session.pk, mode="autopilot", by="test")

    first = _thread(still_then_wait, errors)
    assert holding.wait(WAIT_S)
    second = _thread(ghost_mode, errors)
    deadline = time.monotonic() + WAIT_S
    while not _waiting_on_a_lock():
        assert time.monotonic() < deadline, "the session's service never waited for the counter"
        time.sleep(0.02)
    release.set()  # the first commits: its foreign-key check meets the session's lock
    first.join(WAIT_S)
    second.join(WAIT_S)

    assert not first.is_alive() and not second.is_alive()
    assert errors == []
    session.refresh_from_db()
    assert session.ghost_mode == "autopilot"
    types = list(
        ProductionEvent.objects.filter(stream=str(session.pk))
        .order_by("seq")
        .values_list("type", flat=True)
    )
    assert types[-2:] == ["still.captured", "session.ghost_mode_changed"]
