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

from devices.models import Device
from director import ghost, services
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


def test_a_ghost_switch_and_a_still_of_the_new_hero_at_once_do_not_deadlock(
    operator: Any, settings: Any, tmp_path: Path
) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: SQLite takes no row locks; runs in the scaled pass")
    settings.MEDIA_ROOT = tmp_path / "media"
    hero = register_device("lock-a", name="Cam A").device
    other = register_device("lock-b", name="Cam B").device
    session = services.session_create(name="Locks", operator=operator)
    services.session_start(session_id=session.pk, device_ids=[hero.pk, other.pk])
    proposal = ghost.proposal_create(
        session_id=session.pk,
        kind="switch_hero",
        target_ids=[other.pk],
        payload={},
        rationale="Cam B sees the face",
        confidence=0.8,
        policy="test",
    )
    holding, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def still_of_cam_b() -> None:
        # An ingest takes its camera's row first, then records on the session's stream.
        with transaction.atomic():
            Device.objects.select_for_update(no_key=True).get(pk=other.pk)
            holding.set()
            release.wait(WAIT_S)
            ingest(other, jpeg_bytes(), captured_at=time.time())

    def accept() -> None:
        # Records the decision, switches the hero and sends Cam B its tally.
        ghost.proposal_accept(proposal_id=proposal.pk, decided_by="op")

    first = _thread(still_of_cam_b, errors)
    assert holding.wait(WAIT_S)
    second = _thread(accept, errors)
    deadline = time.monotonic() + WAIT_S
    while not _waiting_on_a_lock():
        assert time.monotonic() < deadline, "the accept never waited for Cam B"
        time.sleep(0.02)
    release.set()
    first.join(WAIT_S)
    second.join(WAIT_S)

    assert not first.is_alive() and not second.is_alive()
    assert errors == []
    session.refresh_from_db()
    assert session.hero_id == other.pk
    types = set(
        ProductionEvent.objects.filter(stream=str(session.pk)).values_list("type", flat=True)
    )
    assert {"still.captured", "ghost.accepted", "hero.switched"} <= types
