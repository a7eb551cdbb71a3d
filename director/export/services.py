"""The zipped bundle the operator downloads from the session's page: one service per change of
an export's state. The work itself (director/export/jobs.py) runs in the background: a Celery
worker in the scaled mode, the server's ticker in the embedded one, never a request.

queued → running → done | failed. One export of a session is open at a time: asking again
while one is queued or running returns that one. A running export whose job stops writing its
heartbeat for `STALE_S` was interrupted (a worker or the server stopped) and is marked failed.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from director.models import PhotoshootSession, SessionExport

STALE_S = 120.0
# The embedded mode's ticker looks for queued exports at once when this is set.
EXPORTS_WANTED = threading.Event()


class ExportRequestRefused(Exception):
    """The export cannot be asked for; the message says why."""


def _enqueue(export_id: UUID) -> None:
    if settings.CELERY_TASK_ALWAYS_EAGER:
        # Embedded default: the server's ticker runs it, never the request's thread.
        EXPORTS_WANTED.set()
        return
    from director.tasks import session_export_run

    session_export_run.delay(str(export_id))


@transaction.atomic
def session_export_request(
    *, session_id: UUID, requested_by: str, copy_stills: bool = False
) -> SessionExport:
    """Queue a zipped bundle of the session (or return the one already under way)."""
    session = PhotoshootSession.objects.select_for_update(no_key=True).get(pk=session_id)
    if session.started_at is None:
        raise ExportRequestRefused(
            f"“{session.name}” has not started: there is nothing recorded to export yet."
        )
    open_export = (
        SessionExport.objects.filter(session=session, state__in=SessionExport.OPEN_STATES)
        .order_by("-requested_at")
        .first()
    )
    if open_export is not None:
        return open_export
    export = SessionExport.objects.create(
        session=session,
        requested_by=requested_by,
        requested_at=timezone.now(),
        copy_stills=copy_stills,
        stage="Waiting for a worker",
    )
    transaction.on_commit(lambda: _enqueue(export.pk))
    return export


@transaction.atomic
def session_export_begin(*, export_id: UUID) -> SessionExport | None:
    """Claim a queued export for this job; None if it is not queued any more (another job
    took it, or it was marked failed)."""
    export = (
        SessionExport.objects.select_for_update(skip_locked=True, no_key=True)
        .filter(pk=export_id, state=SessionExport.State.QUEUED)
        .first()
    )
    if export is None:
        return None
    now = timezone.now()
    export.state = SessionExport.State.RUNNING
    export.started_at = export.heartbeat_at = now
    export.stage = "Starting"
    export.progress = 0.0
    export.save(update_fields=["state", "started_at", "heartbeat_at", "stage", "progress"])
    return export


def session_export_progress(*, export_id: UUID, stage: str, progress: float) -> bool:
    """Record how far a running export is (and that its job is alive). False: it is not
    running any more (marked failed as interrupted), and the job should stop."""
    updated = SessionExport.objects.filter(pk=export_id, state=SessionExport.State.RUNNING).update(
        stage=stage[:120], progress=max(0.0, min(1.0, progress)), heartbeat_at=timezone.now()
    )
    return updated == 1


@transaction.atomic
def session_export_finish(
    *, export_id: UUID, file: str, size_bytes: int, sha256: str, summary: dict[str, Any]
) -> SessionExport:
    export = SessionExport.objects.select_for_update(no_key=True).get(pk=export_id)
    if export.state != SessionExport.State.RUNNING:
        raise ExportRequestRefused(f"The export is {export.state}, not running.")
    export.state = SessionExport.State.DONE
    export.stage = "Ready"
    export.progress = 1.0
    export.finished_at = export.heartbeat_at = timezone.now()
    export.file, export.size_bytes, export.sha256 = file, size_bytes, sha256
    export.summary = summary
    export.save()
    return export


@transaction.atomic
def session_export_fail(*, export_id: UUID, error: str) -> SessionExport:
    export = SessionExport.objects.select_for_update(no_key=True).get(pk=export_id)
    if export.state in (SessionExport.State.DONE, SessionExport.State.FAILED):
        return export  # already ended; a late failure changes nothing
    export.state = SessionExport.State.FAILED
    export.stage = "Failed"
    export.error = error
    export.finished_at = timezone.now()
    export.save(update_fields=["state", "stage", "error", "finished_at"])
    return export


def session_exports_sweep_stale(*, now: Any = None) -> int:
    """Mark failed the running exports whose job stopped writing; returns how many."""
    now = now or timezone.now()
    stale = SessionExport.objects.filter(
        state=SessionExport.State.RUNNING, heartbeat_at__lt=now - timedelta(seconds=STALE_S)
    ).values_list("pk", flat=True)
    count = 0
    for pk in list(stale):
        session_export_fail(
            export_id=pk,
            error="The export was interrupted (its worker or the server stopped). Export again.",
        )
        count += 1
    return count
