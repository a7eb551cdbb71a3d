"""The embedded default's periodic work, run inside the server's own event loop.

In the scaled mode Celery beat runs these tasks on workers. Here there is no worker, and with
the in-memory channel layer only code inside the server process can reach its sockets, so the
server runs the tasks itself, each in a worker thread (off the event loop). Each job loops on
its own.

The one exception is the Convex sync: the Convex client is never called from the ASGI process.
`serve` runs `ledger_sync --loop` as a child process, and the ticker only signals it when a
commit recorded events, and pushes the ledger chip when the outbox's state changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from channels.db import database_sync_to_async
from django.conf import settings

from devices.tasks import (
    commands_sweep_expired,
    device_clocks_fit,
    devices_sweep_offline,
    pairing_code_refresh,
)
from director.export.services import EXPORTS_WANTED
from director.music.jobs import ANALYSIS_WANTED, music_analysis_dispatch
from director.preflight.jobs import preflight_runs_run_queued
from director.preflight.services import PREFLIGHT_WANTED
from director.tasks import (
    ghost_policies_tick,
    proposals_sweep_expired,
    session_exports_sweep,
    sessions_publish_reconcile,
)
from ledger.broadcast import ledger_changed
from ledger.selectors import LedgerStatus, ledger_status
from ledger.sync import FLUSH_WANTED

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    interval_s: float
    task: Callable[[], object]
    # Runs at once when this is set (and clears it), without waiting out the interval.
    wanted: threading.Event | None = None
    # Minutes of work (an export): run on a thread of its own, not the one thread every
    # thread-sensitive sync call of the server (views included) shares.
    long: bool = False


class LedgerWatch:
    """Wakes the ledger_sync child on commit, and pushes the chip when the outbox changes
    (the child's own pushes cannot reach this process's in-memory channel layer)."""

    def __init__(self) -> None:
        self.wake_fd: int | None = None  # the write end of the child's wake pipe
        self.last: LedgerStatus | None = None

    def wake_sync(self) -> None:
        if self.wake_fd is not None:
            # Non-blocking: a full pipe already holds a wake-up the child has not read.
            with contextlib.suppress(BlockingIOError, BrokenPipeError):
                os.write(self.wake_fd, b"!")

    def push_if_changed(self) -> None:
        status = ledger_status()
        if status != self.last:
            self.last = status
            ledger_changed()


ledger_watch = LedgerWatch()

SCHEDULE = [
    Job(1.0, devices_sweep_offline),
    Job(0.5, commands_sweep_expired),
    Job(0.5, proposals_sweep_expired),
    Job(settings.MOTIONMIX_GHOST_POLICY_INTERVAL_S, ghost_policies_tick),
    Job(5.0, pairing_code_refresh),
    Job(5.0, sessions_publish_reconcile),
    Job(10.0, device_clocks_fit),
    # Hands music tracks to the analysis thread at once on upload; the interval catches any
    # left waiting (a restart mid-analysis).
    Job(30.0, music_analysis_dispatch, wanted=ANALYSIS_WANTED),
    Job(30.0, session_exports_sweep, wanted=EXPORTS_WANTED, long=True),
    # Runs started from the Preflight page: about a minute of checks, on a thread of its own.
    Job(30.0, preflight_runs_run_queued, wanted=PREFLIGHT_WANTED, long=True),
    Job(5.0, ledger_watch.wake_sync, wanted=FLUSH_WANTED),
    Job(1.0, ledger_watch.push_if_changed),
]


async def _run_every(job: Job) -> None:
    while True:
        if job.wanted is not None:
            job.wanted.clear()
        try:
            await database_sync_to_async(job.task, thread_sensitive=not job.long)()
        except Exception:
            # One failing run (a locked database, Convex away) must not stop the next.
            logger.exception("periodic task %s failed", getattr(job.task, "name", job.task))
        deadline = time.monotonic() + job.interval_s
        while time.monotonic() < deadline:
            if job.wanted is not None and job.wanted.is_set():
                break
            await asyncio.sleep(0.05)


async def run_ticker(schedule: list[Job] = SCHEDULE) -> None:
    await asyncio.gather(*(_run_every(job) for job in schedule))
