"""The operator's socket: authorize, subscribe, render the page's partials, send."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from devices.broadcast import FLEET_GROUP, DevicesChanged, PairingChanged
from director import fragments
from director.stills.broadcast import StillsChanged
from director.stills.fragments import strip_fragment
from ledger.broadcast import LEDGER_GROUP, LedgerChanged

# Close codes the page understands: log in again, or you may not see this.
CLOSE_LOGIN_REQUIRED = 4401
LEDGER_CHIP_COALESCE_S = 0.5


def _base_url(scope: dict[str, Any]) -> str:
    headers = dict(scope.get("headers") or [])
    host = headers.get(b"host", b"localhost").decode("latin-1")
    scheme = "https" if scope.get("scheme") == "wss" else "http"
    return f"{scheme}://{host}"


class RegistryConsumer(AsyncWebsocketConsumer):
    """Live device cards, the online summary, the coverage map and the pairing panel.

    On connect it sends the whole live state, so a page that reconnects after a drop is never
    stale. Card updates are coalesced per device for a short window: a fleet beating every
    second renders each card at most once per window, however many beats arrive.
    """

    groups: list[str] = []

    async def connect(self) -> None:
        self.known: set[str] = set()
        self.pending: set[str] = set()
        self.flush_task: asyncio.Task[None] | None = None
        self.ledger_task: asyncio.Task[None] | None = None
        # Flushes render one after the other, so `known` is never read while being replaced.
        self.render_lock = asyncio.Lock()
        user = self.scope.get("user")
        await self.accept()
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_LOGIN_REQUIRED)
            return
        # Subscribe before rendering, so nothing that changes in between is missed.
        await self.channel_layer.group_add(FLEET_GROUP, self.channel_name)
        await self.channel_layer.group_add(LEDGER_GROUP, self.channel_name)
        html, self.known = await database_sync_to_async(fragments.registry_full)(
            base_url=_base_url(self.scope)
        )
        await self.send(text_data=html)

    async def disconnect(self, code: int) -> None:
        if self.flush_task is not None:
            self.flush_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.flush_task
        if self.ledger_task is not None:
            self.ledger_task.cancel()
        await self.channel_layer.group_discard(FLEET_GROUP, self.channel_name)
        await self.channel_layer.group_discard(LEDGER_GROUP, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        # The page sends nothing on this socket; actions are htmx posts through the services.
        return

    async def devices_changed(self, event: DevicesChanged) -> None:
        self.pending.add(event["device_id"])
        if self.flush_task is None:
            self.flush_task = asyncio.create_task(self._flush_later())

    async def pairing_changed(self, event: PairingChanged) -> None:
        html = await database_sync_to_async(fragments.pairing_panel)(base_url=_base_url(self.scope))
        await self.send(text_data=html)

    async def stills_changed(self, event: StillsChanged) -> None:
        # The camera's card previews its latest still.
        await self.devices_changed(
            DevicesChanged(type="devices.changed", device_id=event["device_id"])
        )
        # A capture-all lands a burst of stills. A strip whose query began after a still was
        # committed already shows it, so the pushes queued behind that render are dropped
        # rather than rendered again; a lone still is shown at once, with no waiting window.
        # (Both times are server clocks: one machine, or machines kept in step by NTP.)
        if event["committed_at"] < getattr(self, "stills_rendered_from", 0.0):
            return
        self.stills_rendered_from = time.time()
        await self.send(text_data=await database_sync_to_async(strip_fragment)(oob=True))

    async def ledger_changed(self, event: LedgerChanged) -> None:
        # Every recorded event changes the count; render the chip at most twice a second.
        if self.ledger_task is None:
            self.ledger_task = asyncio.create_task(self._ledger_later())

    async def _ledger_later(self) -> None:
        await asyncio.sleep(LEDGER_CHIP_COALESCE_S)
        self.ledger_task = None
        await self.send(text_data=await database_sync_to_async(fragments.ledger_chip)())

    async def _flush_later(self) -> None:
        await asyncio.sleep(settings.MOTIONMIX_PUSH_COALESCE_S)
        self.flush_task = None
        async with self.render_lock:
            ids, self.pending = self.pending, set()
            if not ids:
                return
            html, self.known = await database_sync_to_async(fragments.device_cards)(
                device_ids=ids, known=self.known
            )
            # Placement, lens, tally and presence all show on the map: one render per flush.
            html += await database_sync_to_async(fragments.coverage_map)(oob=True)
            await self.send(text_data=html)
