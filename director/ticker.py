"""The embedded default's periodic work, run inside the server's own event loop.

In the scaled mode Celery beat runs these tasks on workers. Here there is no worker, and with
the in-memory channel layer only code inside the server process can reach its sockets, so the
server runs the tasks itself, each in a worker thread (off the event loop). Each job loops on
its own, so a slow Convex never delays the offline sweep.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from channels.db import database_sync_to_async

from devices.tasks import devices_sweep_offline, pairing_code_refresh
from ledger.sync import FLUSH_WANTED
from ledger.tasks import outbox_flush_task

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    interval_s: float
    task: Callable[[], object]
    # Runs at once when this is set (and clears it), without waiting out the interval.
    wanted: threading.Event | None = None


SCHEDULE = [
    Job(1.0, devices_sweep_offline),
    Job(5.0, pairing_code_refresh),
    Job(5.0, outbox_flush_task, wanted=FLUSH_WANTED),
]


async def _run_every(job: Job) -> None:
    while True:
        if job.wanted is not None:
            job.wanted.clear()
        try:
            await database_sync_to_async(job.task)()
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
