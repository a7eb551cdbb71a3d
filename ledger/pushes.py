"""Sending a channel-layer message from synchronous code after a commit, without waiting.

Services push from on-commit hooks, in Django's worker threads. Where such a thread belongs to
a running server (asgiref records the server's event loop for it), the message is handed to
that loop and the thread goes on at once: a batch of a hundred heartbeats must not wait for a
hundred round trips. Elsewhere (a Celery worker, a management command) it is sent and waited
for. A push that fails is logged, never raised: the change is committed, and pages resync
their partials when their socket reconnects.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any

from asgiref.sync import SyncToAsync, async_to_sync

logger = logging.getLogger(__name__)


def _server_loop() -> asyncio.AbstractEventLoop | None:
    loop = getattr(SyncToAsync.threadlocal, "main_event_loop", None)
    return loop if loop is not None and loop.is_running() else None


def send_soon(message: Coroutine[Any, Any, None], *, what: str) -> None:
    loop = _server_loop()
    if loop is not None:
        future = asyncio.run_coroutine_threadsafe(message, loop)

        def report(done: Future[None]) -> None:
            if not done.cancelled() and done.exception() is not None:
                logger.warning("%s failed", what, exc_info=done.exception())

        future.add_done_callback(report)
        return

    async def wait_for_it() -> None:
        await message

    try:
        async_to_sync(wait_for_it)()
    except Exception:
        logger.warning("%s failed", what, exc_info=True)
