"""The embedded default's periodic work, run inside the server's own event loop.

In the scaled mode Celery beat runs these tasks on workers. Here there is no worker, and with
the in-memory channel layer only code inside the server process can reach its sockets, so the
server runs the tasks itself, each in a worker thread (off the event loop).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from channels.db import database_sync_to_async

from devices.tasks import devices_sweep_offline, pairing_code_refresh

logger = logging.getLogger(__name__)

SCHEDULE: list[tuple[float, Callable[[], object]]] = [
    (1.0, devices_sweep_offline),
    (5.0, pairing_code_refresh),
]


async def run_ticker(schedule: list[tuple[float, Callable[[], object]]] = SCHEDULE) -> None:
    next_due = [0.0] * len(schedule)
    while True:
        now = time.monotonic()
        for i, (interval, task) in enumerate(schedule):
            if now < next_due[i]:
                continue
            next_due[i] = now + interval
            try:
                await database_sync_to_async(task)()
            except Exception:
                # One failing run (a locked database, say) must not stop the others.
                logger.exception("periodic task %s failed", getattr(task, "name", task))
        await asyncio.sleep(0.25)
