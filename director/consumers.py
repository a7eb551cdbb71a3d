"""The operator's socket: authorize, subscribe, render the page's partials, send."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from typing import Any
from uuid import UUID

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.template.loader import render_to_string

from devices.broadcast import FLEET_GROUP, DevicesChanged, PairingChanged
from director import fragments, selectors, session_fragments
from director.hero.broadcast import HeroPreview
from director.music.broadcast import MusicChanged
from director.shared_renders import shared_renders
from director.stills.broadcast import StillsChanged
from director.stills.fragments import strip_fragment
from ledger.broadcast import LEDGER_GROUP, LedgerChanged, SessionEvents, session_group

# Close codes the page understands: log in again, or you may not see this.
CLOSE_LOGIN_REQUIRED = 4401
CLOSE_NOT_FOUND = 4404
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
    flush_task: asyncio.Task[None] | None = None
    ledger_task: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        self.known: set[str] = set()
        self.pending: set[str] = set()
        self.cards_fresh_after = 0.0
        self.ledger_fresh_after = 0.0
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
        self.cards_fresh_after = max(self.cards_fresh_after, event["sent_at"])
        self.pending.add(event["device_id"])
        if self.flush_task is None:
            self.flush_task = asyncio.create_task(self._flush_later())

    async def pairing_changed(self, event: PairingChanged) -> None:
        html = await database_sync_to_async(fragments.pairing_panel)(base_url=_base_url(self.scope))
        await self.send(text_data=html)

    async def stills_changed(self, event: StillsChanged) -> None:
        # The camera's card previews its latest still.
        await self.devices_changed(
            DevicesChanged(
                type="devices.changed",
                device_id=event["device_id"],
                sent_at=event["committed_at"],
            )
        )
        # A capture-all lands a burst of stills. A strip whose query began after a still was
        # committed already shows it, so the pushes queued behind that render are dropped
        # rather than rendered again; a lone still is shown at once, with no waiting window.
        # (Both times are server clocks: one machine, or machines kept in step by NTP.)
        if event["committed_at"] < getattr(self, "stills_rendered_from", 0.0):
            return
        self.stills_rendered_from = time.time()
        html = await shared_renders.get(
            ("strip", self.strip_scope()),
            fresh_after=event["committed_at"],
            render=functools.partial(strip_fragment, oob=True, session_id=self.strip_scope()),
        )
        await self.send(text_data=html)

    def strip_scope(self) -> UUID | None:
        """Whose stills the strip shows: everyone's here, a session's on its page."""
        return None

    async def hero_preview(self, event: HeroPreview) -> None:
        # About once a second per publishing camera: the picture only, into its card (whose
        # renders keep the last one). No database, no shared render: a small template.
        if event["device_id"] not in self.known:
            return
        html = render_to_string(
            "director/partials/live_preview.html",
            {
                "device_id": event["device_id"],
                "image": event["image"],
                "width": event["width"],
                "height": event["height"],
                "fps": event["fps"],
                "oob": True,
            },
        )
        await self.send(text_data=html)

    async def ledger_changed(self, event: LedgerChanged) -> None:
        # Every recorded event changes the count; render the chip at most twice a second.
        self.ledger_fresh_after = max(self.ledger_fresh_after, event["sent_at"])
        if self.ledger_task is None:
            self.ledger_task = asyncio.create_task(self._ledger_later())

    async def _ledger_later(self) -> None:
        await asyncio.sleep(LEDGER_CHIP_COALESCE_S)
        self.ledger_task = None
        html = await shared_renders.get(
            "ledger-chip", fresh_after=self.ledger_fresh_after, render=fragments.ledger_chip
        )
        await self.send(text_data=html)

    async def _flush_later(self) -> None:
        await asyncio.sleep(settings.MOTIONMIX_PUSH_COALESCE_S)
        self.flush_task = None
        async with self.render_lock:
            ids, self.pending = self.pending, set()
            if not ids:
                return
            fresh_after = self.cards_fresh_after
            # Sockets that saw the same changes ask for the same cards: one render for all.
            wanted, known = frozenset(ids), frozenset(self.known)
            html, now_known = await shared_renders.get(
                ("cards", wanted, known),
                fresh_after=fresh_after,
                render=functools.partial(fragments.device_cards, device_ids=wanted, known=known),
            )
            self.known = set(now_known)
            # Placement, lens, tally and presence all show on the map: one render per flush.
            html += await shared_renders.get(
                "coverage-map",
                fresh_after=fresh_after,
                render=functools.partial(fragments.coverage_map, oob=True),
            )
            await self.send(text_data=html)


# What each kind of session event changes on the page, beyond the event log.
SESSION_PARTS: dict[str, set[str]] = {
    "session.started": {"head", "hero", "banner", "panel"},
    "session.stopped": {"head", "hero", "banner", "panel"},
    "session.ghost_mode_changed": {"head", "banner"},
    "hero.switched": {"hero"},
    "hero.on_air": {"hero"},
    "still.captured": {"hero"},
    "device.publish_started": {"hero"},
    "device.publish_stopped": {"hero"},
}
# The event log alone may wait this long to gather a burst (a capture-all is dozens of events).
LOG_COALESCE_S = 0.25
# The banner goes first, on its own: it is what the operator must act on.
SEND_ORDER = ("banner", "head", "hero", "music", "panel", "log")


def parts_for(event_type: str) -> set[str]:
    if event_type.startswith("ghost."):
        return {"banner", "panel"}
    if event_type.startswith("music."):
        return {"music"}
    return SESSION_PARTS.get(event_type, set())


class SessionConsumer(RegistryConsumer):
    """The Live Director of one session: everything the registry socket sends, plus the
    session's head, hero, Ghost banner, Ghost panel and event log, all pushed from the
    session's ledger stream (`session-<id>`).

    What an event changes renders at once, the banner first and on its own; the event log
    alone is gathered for a moment, so a burst of command events is one render. Every part is
    rendered once for all the sockets of the session in this process.
    """

    async def connect(self) -> None:
        self.session_id = str(self.scope["url_route"]["kwargs"]["session_id"])
        self.dirty: set[str] = set()
        self.fresh_after = 0.0
        self.urgent = asyncio.Event()
        self.wake = asyncio.Event()
        self.session_task: asyncio.Task[None] | None = None
        user = self.scope.get("user")
        if user is not None and user.is_authenticated:
            # A session this operator may not see is answered as a missing one (404).
            visible = await database_sync_to_async(selectors.session_visible)(
                user=user, session_id=self.session_id
            )
            if not visible:
                await self.accept()
                await self.close(code=CLOSE_NOT_FOUND)
                return
            await self.channel_layer.group_add(session_group(self.session_id), self.channel_name)
        await super().connect()
        if user is None or not user.is_authenticated:
            return
        html = await database_sync_to_async(session_fragments.parts)(
            session_id=self.session_id, names={*session_fragments.PARTS, "strip"}
        )
        await self.send(text_data=html)
        self.session_task = asyncio.create_task(self._session_loop())

    async def disconnect(self, code: int) -> None:
        if self.session_task is not None:
            self.session_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.session_task
        await self.channel_layer.group_discard(session_group(self.session_id), self.channel_name)
        await super().disconnect(code)

    def strip_scope(self) -> UUID | None:
        return UUID(self.session_id)

    async def session_events(self, event: SessionEvents) -> None:
        parts: set[str] = set()
        for event_type in event["event_types"]:
            parts |= parts_for(event_type)
        self.dirty |= parts | {"log"}
        self.fresh_after = max(self.fresh_after, event["committed_at"])
        if parts:
            self.urgent.set()
        self.wake.set()

    async def music_changed(self, event: MusicChanged) -> None:
        # The beat analysis moved on (no ledger event): the music panel shows how far.
        self.dirty.add("music")
        self.fresh_after = max(self.fresh_after, event["committed_at"])
        self.urgent.set()
        self.wake.set()

    async def _session_loop(self) -> None:
        while True:
            await self.wake.wait()
            if not self.urgent.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.urgent.wait(), LOG_COALESCE_S)
            self.wake.clear()
            self.urgent.clear()
            names, self.dirty = self.dirty, set()
            fresh_after = self.fresh_after
            for part in SEND_ORDER:
                if part not in names:
                    continue
                html = await shared_renders.get(
                    ("session", self.session_id, part),
                    fresh_after=fresh_after,
                    render=functools.partial(
                        session_fragments.parts, session_id=self.session_id, names={part}
                    ),
                    urgent=part == "banner",
                )
                await self.send(text_data=html)


class UnknownSocket(AsyncWebsocketConsumer):
    """Any other socket path: closed with the not-found code, as an unknown page is a 404."""

    async def connect(self) -> None:
        # Accepted first: a close before the accept reaches the browser as a bare handshake
        # failure, without the code.
        await self.accept()
        await self.close(code=CLOSE_NOT_FOUND)
