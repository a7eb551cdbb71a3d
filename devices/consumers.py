"""The device WebSocket, `/ws/v1/device/`: commands pushed as they are queued, acks and
heartbeats sent back. The same token as the HTTP calls, in the Authorization header.

Messages (JSON objects, each with a "type"):

- server → device: `hello {device_id, server_time}`, `command {command}`,
  `ack.ok {id, state, changed}`, `heartbeat.ok {server_time, received_at, pending_commands,
  clock_offset_s}`, `error {error, detail, ref?}`.
- device → server: `ack {id, status, detail, done_at}`, `heartbeat {...the heartbeat body}`.

A bad message gets an error naming what was wrong and the socket stays open; a bad token gets
an error and close code 4401 (register again).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from uuid import UUID

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.utils import timezone
from pydantic import ValidationError

from devices import broadcast, delivery, selectors, services
from devices.api import AckIn, HeartbeatIn, heartbeat_from_schema
from devices.broadcast import CommandsReady
from devices.heartbeats import bearer_token, format_errors, transport_refusal
from devices.models import Device, DeviceCommand

CLOSE_BAD_TOKEN = 4401
CLOSE_BAD_TRANSPORT = 4400
MAX_MESSAGE_BYTES = 64 * 1024


class DeviceConsumer(AsyncWebsocketConsumer):
    groups: list[str] = []

    async def connect(self) -> None:
        self.device_id: UUID | None = None
        self.deliver_lock = asyncio.Lock()
        await self.accept()
        refusal = transport_refusal(self.scope, dict(self.scope.get("headers") or []))
        if refusal is not None:
            await self._send({"type": "error", **refusal})
            await self.close(code=CLOSE_BAD_TRANSPORT)
            return
        device = await database_sync_to_async(selectors.device_get_by_token)(
            token=bearer_token(dict(self.scope.get("headers") or []))
        )
        if device is None:
            await self._send(
                {
                    "type": "error",
                    "error": "unauthorized",
                    "detail": "A valid device token is required: send Authorization: "
                    "Bearer <token>, or register again.",
                }
            )
            await self.close(code=CLOSE_BAD_TOKEN)
            return
        self.device_id = device.pk
        await self.channel_layer.group_add(broadcast.device_group(device.pk), self.channel_name)
        await self._send({"type": "hello", "device_id": str(device.pk), "server_time": time.time()})
        await self._deliver()

    async def disconnect(self, code: int) -> None:
        if self.device_id is not None:
            await self.channel_layer.group_discard(
                broadcast.device_group(self.device_id), self.channel_name
            )

    async def commands_ready(self, event: CommandsReady) -> None:
        await self._deliver()

    async def _deliver(self) -> None:
        assert self.device_id is not None
        async with self.deliver_lock:
            claimed = await delivery.claim(device_id=self.device_id, via=DeviceCommand.Via.SOCKET)
            if not claimed:
                return
            offset = await delivery.clock_offset(device_id=self.device_id)
            for command in claimed:
                await self._send(
                    {"type": "command", "command": delivery.command_json(command, offset)}
                )

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.device_id is None:
            return
        raw = text_data if text_data is not None else (bytes_data or b"").decode("utf-8", "replace")
        if len(raw) > MAX_MESSAGE_BYTES:
            await self._error("too_large", f"Messages are at most {MAX_MESSAGE_BYTES} bytes.")
            return
        try:
            message = json.loads(raw)
        except json.JSONDecodeError as exc:
            await self._error("bad_json", f"The message is not valid JSON: {exc}.")
            return
        if not isinstance(message, dict):
            await self._error("bad_json", "A message must be a JSON object.")
            return
        kind = message.get("type")
        if kind == "ack":
            await self._ack(message)
        elif kind == "heartbeat":
            await self._heartbeat(message)
        else:
            await self._error("invalid", f"Unknown message type {kind!r}: send ack or heartbeat.")

    async def _ack(self, message: dict[str, Any]) -> None:
        ref = message.get("id")
        try:
            command_id = UUID(str(ref))
            ack = AckIn.model_validate(
                {k: v for k, v in message.items() if k not in ("type", "id")}
            )
        except ValueError as exc:
            detail = (
                format_errors(exc) if isinstance(exc, ValidationError) else "id: not a command id"
            )
            await self._error("invalid", detail, ref=ref)
            return
        try:
            command, changed = await database_sync_to_async(services.command_ack)(
                device_id=self.device_id, command_id=command_id, **ack.model_dump()
            )
        except services.CommandNotFound as exc:
            await self._error("not_found", str(exc), ref=ref)
            return
        except services.CommandConflict as exc:
            await self._error("conflict", str(exc), ref=ref)
            return
        await self._send(
            {"type": "ack.ok", "id": str(command.pk), "state": command.state, "changed": changed}
        )

    async def _heartbeat(self, message: dict[str, Any]) -> None:
        received_at = timezone.now()
        try:
            beat = HeartbeatIn.model_validate({k: v for k, v in message.items() if k != "type"})
        except ValidationError as exc:
            await self._error("invalid", format_errors(exc))
            return
        try:
            device: Device = await database_sync_to_async(services.device_heartbeat)(
                device_id=self.device_id, beat=heartbeat_from_schema(beat), received_at=received_at
            )
        except services.HeartbeatRejected as exc:
            await self._error("invalid", str(exc))
            return
        pending = await database_sync_to_async(selectors.command_pending_count)(device_id=device.pk)
        await self._send(
            {
                "type": "heartbeat.ok",
                "server_time": time.time(),
                "received_at": received_at.timestamp(),
                "pending_commands": pending,
                "clock_offset_s": device.clock_offset_s,
            }
        )

    async def _error(self, code: str, detail: str, *, ref: Any = None) -> None:
        body: dict[str, Any] = {"type": "error", "error": code, "detail": detail}
        if ref is not None:
            body["ref"] = ref
        await self._send(body)

    async def _send(self, body: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(body))
