"""Waiting on a condition in an asyncio test, bounded, with what was awaited in the failure."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def until(check: Callable[[], bool], *, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"after {within:g} s still not: {what}")
        await asyncio.sleep(0.05)
