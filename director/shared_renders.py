"""One render of a pushed part for every operator socket of this process that shows it.

Twenty operators on one session receive the same push at the same moment. Rendering the banner
twenty times would queue twenty renders on the one thread Channels gives database work, and
the last operator would wait for all of them. Instead the first socket to ask starts the
render and the others await the same one.

A render is reused only if it began after the change it must show was committed: a query that
starts later sees the commit. The push carries the commit's time (`sent_at`, taken on the
committing machine right after the commit; the servers of one deployment keep their clocks in
step with NTP, and a stale answer costs no more than one extra render).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Generic, TypeVar

from channels.db import database_sync_to_async
from django.db import close_old_connections

T = TypeVar("T")
KEEP = 512  # renders remembered; old sessions and device sets fall out
URGENT_EXECUTOR = ThreadPoolExecutor(max_workers=2, thread_name_prefix="urgent-render")


@dataclass
class _Render(Generic[T]):
    started_at: float
    task: asyncio.Future[T]


class SharedRenders:
    def __init__(self) -> None:
        self._latest: OrderedDict[tuple[int, Hashable], _Render[object]] = OrderedDict()

    async def get(
        self, key: Hashable, *, fresh_after: float, render: Callable[[], T], urgent: bool = False
    ) -> T:
        """The result of `render()`, from a render begun after `fresh_after` (unix s).

        An `urgent` render (the Ghost banner) runs on threads of its own instead of queueing
        behind the cards, maps and logs on the one thread Channels gives database work."""
        loop = asyncio.get_running_loop()
        slot = (id(loop), key)
        entry = self._latest.get(slot)
        if entry is None or entry.started_at < fresh_after or _failed(entry.task):
            if urgent:
                work: asyncio.Future[T] = loop.run_in_executor(
                    URGENT_EXECUTOR, _with_connection, render
                )
            else:
                work = asyncio.ensure_future(database_sync_to_async(render)())
            entry = _Render(started_at=time.time(), task=work)
            self._latest[slot] = entry  # type: ignore[assignment]
            while len(self._latest) > KEEP:
                self._latest.popitem(last=False)
        self._latest.move_to_end(slot)
        # A socket that goes away while waiting must not cancel the render the others share.
        return await asyncio.shield(entry.task)  # type: ignore[return-value]

    def forget(self) -> None:
        self._latest.clear()


def _with_connection(render: Callable[[], T]) -> T:
    """Run a read on an urgent thread, with the connection hygiene Channels applies to its own
    database thread (a connection past its age, or broken, is replaced; pooled ones return)."""
    close_old_connections()
    try:
        return render()
    finally:
        close_old_connections()


def _failed(task: asyncio.Future[object]) -> bool:
    return task.done() and (task.cancelled() or task.exception() is not None)


shared_renders = SharedRenders()
