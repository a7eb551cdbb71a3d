"""Preflight's changes of state: its login, its virtual device's revocation, and the runs the
Preflight page starts (queued → running → done | failed, like a session export)."""

from __future__ import annotations

import secrets
import threading
from datetime import timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from devices import services as device_services
from devices.models import Device
from director.models import PreflightRun
from director.preflight.context import Credentials

PREFLIGHT_USERNAME = "preflight"
# A running run whose job stops writing for this long was interrupted (a server restart).
STALE_S = 300.0
# A queued run no job has taken for this long never will (no worker, a lost message).
QUEUED_STALE_S = 120.0
# The embedded mode's ticker looks for queued runs at once when this is set.
PREFLIGHT_WANTED = threading.Event()


class PreflightRefused(Exception):
    """The run cannot be started; the message says why."""


@transaction.atomic
def preflight_user_ensure() -> Credentials:
    """The dedicated staff login `preflight`, made on first use, with a fresh random password
    for this run (only its hash is stored; nobody needs to know it afterwards)."""
    users = get_user_model()
    user = users.objects.select_for_update(no_key=True).filter(username=PREFLIGHT_USERNAME).first()
    if user is None:
        user = users(username=PREFLIGHT_USERNAME, email="")
    password = secrets.token_urlsafe(24)
    user.set_password(password)
    user.is_staff = True
    user.is_active = True
    user.save()
    return Credentials(username=PREFLIGHT_USERNAME, password=password)


@transaction.atomic
def preflight_device_revoke(*, device_id: UUID) -> Device:
    """Retire the journey's virtual camera: its token stops working at once (a new random hash
    nobody holds) and it is marked offline. The row stays, as stills and events name it; the
    next run registers the same install id again and gets a new token."""
    device = Device.objects.select_for_update(no_key=True).get(pk=device_id)
    device.token_hash = device_services.hash_token(secrets.token_urlsafe(32))
    device.save(update_fields=["token_hash"])
    return device_services.device_mark_offline(device_id=device_id, reason="preflight_revoked")


def _enqueue(run_id: UUID) -> None:
    if settings.CELERY_TASK_ALWAYS_EAGER:
        # Embedded default: the server's ticker runs it on a thread of its own.
        PREFLIGHT_WANTED.set()
        return
    from director.tasks import preflight_run_task

    preflight_run_task.delay(str(run_id))


@transaction.atomic
def preflight_request(*, url: str, requested_by: str) -> PreflightRun:
    """Queue a run against `url` (or return the one already under way: one at a time). A run
    left open by a job that died is marked failed first, so it cannot block the next."""
    preflight_sweep_stale()
    open_run = PreflightRun.objects.select_for_update(no_key=True).filter(
        state__in=PreflightRun.OPEN_STATES
    )
    current = open_run.order_by("-requested_at").first()
    if current is not None:
        return current
    run = PreflightRun.objects.create(
        url=url.rstrip("/"), requested_by=requested_by, requested_at=timezone.now()
    )
    transaction.on_commit(lambda: _enqueue(run.pk))
    return run


@transaction.atomic
def preflight_begin(*, run_id: UUID) -> PreflightRun | None:
    """Claim a queued run for this job; None if it is not queued any more."""
    run = (
        PreflightRun.objects.select_for_update(skip_locked=True, no_key=True)
        .filter(pk=run_id, state=PreflightRun.State.QUEUED)
        .first()
    )
    if run is None:
        return None
    run.state = PreflightRun.State.RUNNING
    run.started_at = run.heartbeat_at = timezone.now()
    run.results = []
    run.save(update_fields=["state", "started_at", "heartbeat_at", "results"])
    return run


def preflight_progress(
    *, run_id: UUID, results: list[dict[str, Any]], session_id: UUID | None = None
) -> bool:
    """Record the results so far (the job's heartbeat). False: the run is not running any more."""
    fields: dict[str, Any] = {"results": results, "heartbeat_at": timezone.now()}
    if session_id is not None:
        fields["session_id"] = session_id
    updated = PreflightRun.objects.filter(pk=run_id, state=PreflightRun.State.RUNNING).update(
        **fields
    )
    return updated == 1


@transaction.atomic
def preflight_finish(*, run_id: UUID, results: list[dict[str, Any]], passed: bool) -> PreflightRun:
    run = PreflightRun.objects.select_for_update(no_key=True).get(pk=run_id)
    if run.state != PreflightRun.State.RUNNING:
        raise PreflightRefused(f"The run is {run.state}, not running.")
    run.state = PreflightRun.State.DONE
    run.results = results
    run.passed = passed
    run.finished_at = run.heartbeat_at = timezone.now()
    run.save(update_fields=["state", "results", "passed", "finished_at", "heartbeat_at"])
    return run


@transaction.atomic
def preflight_fail(*, run_id: UUID, error: str) -> PreflightRun:
    run = PreflightRun.objects.select_for_update(no_key=True).get(pk=run_id)
    if run.state in (PreflightRun.State.DONE, PreflightRun.State.FAILED):
        return run
    run.state = PreflightRun.State.FAILED
    run.error = error
    run.passed = False
    run.finished_at = timezone.now()
    run.save(update_fields=["state", "error", "passed", "finished_at"])
    return run


def preflight_sweep_stale(*, now: Any = None) -> int:
    """Mark failed the running runs whose job stopped writing, and the queued runs no job took;
    returns how many."""
    now = now or timezone.now()
    running = PreflightRun.objects.filter(
        state=PreflightRun.State.RUNNING, heartbeat_at__lt=now - timedelta(seconds=STALE_S)
    ).values_list("pk", flat=True)
    queued = PreflightRun.objects.filter(
        state=PreflightRun.State.QUEUED,
        requested_at__lt=now - timedelta(seconds=QUEUED_STALE_S),
    ).values_list("pk", flat=True)
    interrupted, untaken = list(running), list(queued)
    for pk in interrupted:
        preflight_fail(
            run_id=pk, error="The run was interrupted (its worker or the server stopped)."
        )
    for pk in untaken:
        preflight_fail(
            run_id=pk,
            error=f"No worker took the run within {QUEUED_STALE_S:g} s: is the Celery worker "
            "(or, embedded, the server's ticker) running?",
        )
    return len(interrupted) + len(untaken)
