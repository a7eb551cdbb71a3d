"""The background half of a run started from the Preflight page: a Celery worker in the scaled
mode, the server's ticker (on a thread of its own) in the embedded one; never a request.
Every result is written as it comes, which is also the job's heartbeat; the page polls it."""

from __future__ import annotations

import logging
import threading
from typing import Any
from uuid import UUID

from director.models import PreflightRun
from director.preflight.context import Context
from director.preflight.runner import Result, preflight_run
from director.preflight.services import (
    preflight_begin,
    preflight_fail,
    preflight_finish,
    preflight_progress,
    preflight_sweep_stale,
    preflight_user_ensure,
)

logger = logging.getLogger(__name__)


def preflight_run_execute(*, run_id: UUID) -> PreflightRun | None:
    """Run one queued run to its verdict; None when it was not queued (another job took it)."""
    run = preflight_begin(run_id=run_id)
    if run is None:
        return None
    results: list[dict[str, Any]] = []
    try:
        ctx = Context(url=run.url, run_id=str(run.pk), credentials=preflight_user_ensure())

        def record(result: Result) -> None:
            results.append(result.as_dict())
            session = ctx.notes.get("session_id")
            preflight_progress(
                run_id=run_id, results=list(results), session_id=UUID(session) if session else None
            )

        finished = preflight_run(ctx, run_id=str(run.pk), on_result=record)
    except Exception as exc:
        logger.exception("preflight run %s could not finish", run_id)
        return preflight_fail(run_id=run_id, error=f"{type(exc).__name__}: {exc}")
    return preflight_finish(
        run_id=run_id, results=[r.as_dict() for r in finished.results], passed=finished.passed
    )


def preflight_run_in_background(*, run_id: UUID) -> threading.Thread:
    """The Celery task's way to run it: on a thread of the worker process, so the worker stays
    free while the run waits on it. A run checks that a worker answers a ping and that the
    ledger's flush tasks reach Convex; a worker busy with the run itself (the solo pool, or
    every prefork child) would answer neither, and the run would fail its own deployment."""

    def work() -> None:
        from django.db import connections

        try:
            preflight_run_execute(run_id=run_id)
        finally:
            connections.close_all()

    thread = threading.Thread(target=work, name=f"preflight-{run_id}", daemon=True)
    thread.start()
    return thread


def preflight_runs_run_queued() -> int:
    """Mark interrupted runs failed, then run every queued one (the embedded ticker's job, and
    the scaled sweep of a lost message); returns how many were run."""
    preflight_sweep_stale()
    count = 0
    for pk in list(
        PreflightRun.objects.filter(state=PreflightRun.State.QUEUED)
        .order_by("requested_at")
        .values_list("pk", flat=True)
    ):
        if preflight_run_execute(run_id=pk) is not None:
            count += 1
    return count
