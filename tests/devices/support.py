"""Helpers shared by the device tests: the error contract, the fleet group, the ledger."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

from channels.layers import BaseChannelLayer
from django.db import connection

from devices.broadcast import FLEET_GROUP
from ledger.models import ProductionEvent

SENTINEL = "test.sentinel"
T = TypeVar("T")


def assert_error(response: Any, status: int, code: str) -> str:
    """The contract's error body: exactly `{"error", "detail"}`, as JSON. Returns the detail."""
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = response.json()
    assert set(body) == {"error", "detail"}, body
    assert body["error"] == code, body
    assert isinstance(body["detail"], str)
    assert body["detail"]
    return str(body["detail"])


def events(type_name: str, **filters: Any) -> list[ProductionEvent]:
    return list(ProductionEvent.objects.filter(type=type_name, **filters).order_by("seq"))


def database_text() -> str:
    """Every row of every table, as text, to prove a secret is stored nowhere."""
    parts: list[str] = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")  # noqa: S608
            parts.extend(repr(row) for row in cursor.fetchall())
    return "\n".join(parts)


class FleetListener:
    """A channel subscribed to the fleet group on the configured (in-memory or Redis) layer.

    It receives on one event loop of its own for its whole life: channels_redis keeps receive
    state and backup-queue cleaners on the loop that received, so receiving through a fresh
    `async_to_sync` loop each time would lose or repeat messages.
    """

    def __init__(self, layer: BaseChannelLayer) -> None:
        self.layer = layer
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.channel: str = self._run(layer.new_channel())
        self._run(layer.group_add(FLEET_GROUP, self.channel))

    def _run(self, coro: Coroutine[Any, Any, T], timeout_s: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def close(self) -> None:
        try:
            self._run(self.layer.group_discard(FLEET_GROUP, self.channel))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=5)
            self.loop.close()

    def changed_devices(self, timeout_s: float = 5.0) -> list[str]:
        """The device ids of the `devices.changed` pushes so far, each checked to carry the
        time it was sent (pages share renders by it)."""
        pushed = self.drain(timeout_s)
        assert all(m["type"] == "devices.changed" for m in pushed), pushed
        assert all(abs(m["sent_at"] - time.time()) < 60 for m in pushed), pushed
        return [m["device_id"] for m in pushed]

    def drain(self, timeout_s: float = 5.0) -> list[dict[str, Any]]:
        """Everything the group sent so far. A sentinel sent straight to the channel marks the
        end, so nothing waits for a silence that would slow the suite down."""
        return self._run(self._drain(timeout_s), timeout_s + 5)

    async def _drain(self, timeout_s: float) -> list[dict[str, Any]]:
        await self.layer.send(self.channel, {"type": SENTINEL})
        received: list[dict[str, Any]] = []
        async with asyncio.timeout(timeout_s):
            while True:
                message = await self.layer.receive(self.channel)
                if message["type"] == SENTINEL:
                    break
                received.append(message)
        wait_received = getattr(self.layer, "wait_received", None)
        if wait_received is not None:  # Redis: let the backup-queue cleaners finish
            await wait_received()
        return received
