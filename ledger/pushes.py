"""Sending a channel-layer message from synchronous code after a commit, without waiting.

Services push from on-commit hooks, in Django's worker threads. Where such a thread belongs to
a running server (asgiref records the server's event loop for it), the message is handed to
that loop and the thread goes on at once: a batch of a hundred heartbeats must not wait for a
hundred round trips. A Celery worker hands it to its own long-lived push loop (`PushLoop`).
Elsewhere (a management command, a test) it is sent and waited for. A push that fails is
logged, never raised: the change is committed, and pages resync their partials when their
socket reconnects.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures
from typing import Any

from asgiref.sync import SyncToAsync, async_to_sync

logger = logging.getLogger(__name__)


class PushLoop:
    """One long-lived event loop, in a daemon thread, for a worker process's pushes.

    Without a server loop, each push would otherwise run on a loop made for it, and the
    Redis channel layer (whose connections belong to a loop) would connect anew every time:
    about 5 ms a push against well under 1 ms on a loop that stays. A Celery worker turns this
    on (`enable()`); what is still in flight at exit is given a moment to go out.
    """

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.lock = threading.Lock()
        self.in_flight: set[Future[None]] = set()

    @property
    def enabled(self) -> bool:
        return self.loop is not None

    def enable(self) -> None:
        with self.lock:
            if self.loop is not None:
                return
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="motionmix-pushes", daemon=True).start()
            self.loop = loop
            atexit.register(self.drain)

    def submit(self, message: Coroutine[Any, Any, None], *, what: str) -> None:
        assert self.loop is not None
        future = asyncio.run_coroutine_threadsafe(message, self.loop)
        with self.lock:
            self.in_flight.add(future)

        def done(finished: Future[None]) -> None:
            with self.lock:
                self.in_flight.discard(finished)
            _report(finished, what)

        future.add_done_callback(done)

    def drain(self, timeout_s: float = 5.0) -> None:
        with self.lock:
            waiting = list(self.in_flight)
        if waiting:
            wait_futures(waiting, timeout=timeout_s)


push_loop = PushLoop()


def _report(done: Future[None], what: str) -> None:
    if not done.cancelled() and done.exception() is not None:
        logger.warning("%s failed", what, exc_info=done.exception())


def send_soon(message: Coroutine[Any, Any, None], *, what: str) -> None:
    loop = getattr(SyncToAsync.threadlocal, "main_event_loop", None)
    if loop is not None and not loop.is_running():
        # A server thread finishing its work while the server shuts down: its loop is gone,
        # and waiting on it would hang the exit. No page is listening any more.
        message.close()
        logger.info("%s dropped: the server is shutting down", what)
        return
    if loop is not None:
        future = asyncio.run_coroutine_threadsafe(message, loop)
        future.add_done_callback(lambda done: _report(done, what))
        return
    if push_loop.enabled:
        push_loop.submit(message, what=what)
        return

    async def wait_for_it() -> None:
        await message

    try:
        async_to_sync(wait_for_it)()
    except Exception:
        logger.warning("%s failed", what, exc_info=True)
