"""The heartbeat endpoint's hot path, answered at the ASGI layer with group commit.

Every device beats every couple of seconds, so heartbeats are most of the server's traffic.
Through Django's request cycle one costs a fresh thread, a fresh database connection and a
dozen middleware hops; measured, that capped a 2-core machine near 50 beats/s. Here the request
is parsed and validated on the event loop with the same schema as the documented Ninja
endpoint (`devices/api.py`), then queued to one writer thread. The writer takes every beat
waiting, applies them through the one service (`services.device_heartbeats_record`) in a
single transaction on its own long-lived connection, commits, and only then answers each
request. Nothing is acknowledged before it is committed, a beat that is refused does not
disturb the others in its batch, and SQLite gets one writer instead of many fighting for its
lock.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DatabaseError, connection, connections, transaction
from django.db.models import Count
from django.http.request import split_domain_port, validate_host
from django.utils import timezone
from pydantic import ValidationError

from devices import services
from devices.api import JSON_BODY_LIMIT, HeartbeatIn, heartbeat_from_schema
from devices.models import Device, DeviceCommand
from motionmix.types import Receive, Scope, Send

logger = logging.getLogger(__name__)

PATH = "/api/v1/devices/heartbeat"
MAX_BATCH = 256


@dataclass
class Beat:
    token_hash: str
    beat: services.Heartbeat
    received_at: datetime
    future: asyncio.Future[tuple[int, dict[str, Any]]]
    answer: tuple[int, dict[str, Any]] | None = field(default=None)


def _error(status: int, code: str, detail: str) -> tuple[int, dict[str, Any]]:
    return status, {"error": code, "detail": detail}


UNAUTHORIZED = _error(
    401, "unauthorized", "A valid device token is required: send Authorization: Bearer <token>."
)


def format_errors(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ())) or "body"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts)


class HeartbeatWriter:
    """One thread, one connection, one transaction per batch of waiting beats. There is one
    writer per event loop (the server has one); it stops when its loop stops."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: queue.SimpleQueue[Beat] = queue.SimpleQueue()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="heartbeats")
        # Run through asgiref, so the services' on-commit pushes (async_to_sync) reach this
        # event loop, where the in-memory channel layer lives.
        run = sync_to_async(self._run, thread_sensitive=False, executor=self.executor)
        self.task = loop.create_task(run())
        self.batches = 0
        self.stopping = threading.Event()

    def stop(self) -> None:
        """Finish the batch in hand, close the connection, end the thread."""
        self.stopping.set()
        self.executor.shutdown(wait=True)

    def submit(self, beat: Beat) -> None:
        self.queue.put(beat)

    def _run(self) -> None:
        try:
            while (
                threading.main_thread().is_alive()
                # A writer started while the server shuts down (a beat that arrived after
                # writers_stop) ends with the loop: Python's exit would wait for it forever.
                and self.loop.is_running()
                and not self.stopping.is_set()
            ):
                try:
                    first = self.queue.get(timeout=0.2)
                except queue.Empty:
                    continue
                batch = [first]
                while len(batch) < MAX_BATCH:
                    try:
                        batch.append(self.queue.get_nowait())
                    except queue.Empty:
                        break
                self.apply(batch)
        finally:
            connections.close_all()  # this thread's connection; the pool gets it back

    def apply(self, batch: list[Beat]) -> None:
        try:
            with transaction.atomic():
                owners = dict(
                    Device.objects.filter(token_hash__in={b.token_hash for b in batch}).values_list(
                        "token_hash", "pk"
                    )
                )
                known = [b for b in batch if b.token_hash in owners]
                for item in batch:
                    if item.token_hash not in owners:
                        item.answer = UNAUTHORIZED
                outcomes = services.device_heartbeats_record(
                    beats=[
                        services.BeatIn(
                            device_id=owners[b.token_hash], beat=b.beat, received_at=b.received_at
                        )
                        for b in known
                    ]
                )
                pending = dict(
                    DeviceCommand.objects.filter(
                        device_id__in={o.pk for o in outcomes if isinstance(o, Device)},
                        state=DeviceCommand.State.QUEUED,
                        expires_at__gt=timezone.now(),
                    )
                    .values("device_id")
                    .annotate(n=Count("pk"))
                    .values_list("device_id", "n")
                )
            self.batches += 1
            for item, outcome in zip(known, outcomes, strict=True):
                if isinstance(outcome, str):
                    item.answer = _error(400, "invalid", outcome)
                else:
                    item.answer = (
                        200,
                        {
                            "received_at": item.received_at.timestamp(),
                            "pending_commands": pending.get(outcome.pk, 0),
                            "clock_offset_s": outcome.clock_offset_now(),
                        },
                    )
        except DatabaseError as exc:
            # The database went away or is locked beyond its timeout: nothing of this batch
            # was stored. Drop the connection so the next batch opens a fresh one.
            logger.exception("heartbeat batch of %d failed", len(batch))
            connection.close()
            for item in batch:
                item.answer = _error(
                    503, "unavailable", f"The server could not store the beat ({exc}); retry."
                )
        # One wake-up of the event loop answers the whole batch.
        self.loop.call_soon_threadsafe(_resolve_all, batch)


def _resolve_all(batch: list[Beat]) -> None:
    for item in batch:
        if not item.future.done():
            item.future.set_result(
                item.answer or _error(500, "server_error", "The beat was not stored.")
            )


_writers: dict[asyncio.AbstractEventLoop, HeartbeatWriter] = {}


def writers_stop() -> None:
    """Stop every writer (server shutdown, end of a test): beats already queued are answered."""
    while _writers:
        _, writer = _writers.popitem()
        writer.stop()


def writer_for(loop: asyncio.AbstractEventLoop) -> HeartbeatWriter:
    writer = _writers.get(loop)
    if writer is None or writer.task.done():
        for old in [known for known in _writers if known.is_closed()]:
            del _writers[old]
        writer = _writers[loop] = HeartbeatWriter(loop)
    return writer


async def respond(send: Send, status: int, body: dict[str, Any], **headers: str) -> None:
    payload = json.dumps(body).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    raw += [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _declared_length(headers: dict[bytes, bytes]) -> int | None:
    """The declared Content-Length (0 when there is none), or None when it is not a number."""
    value = headers.get(b"content-length", b"0").strip() or b"0"
    return int(value) if value.isdigit() else None


def transport_refusal(scope: Scope, headers: dict[bytes, bytes]) -> dict[str, str] | None:
    """What Django's middleware would refuse before the view: a foreign Host, plain HTTP where
    HTTPS is required."""
    host = headers.get(b"host", b"").decode("latin-1")
    domain, _ = split_domain_port(host)
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return {"error": "bad_host", "detail": f"This server does not answer for {host!r}."}
    if settings.SECURE_SSL_REDIRECT and not _is_secure(scope, headers):
        return {"error": "https_required", "detail": "Send device calls over HTTPS."}
    return None


def _is_secure(scope: Scope, headers: dict[bytes, bytes]) -> bool:
    if scope.get("scheme") in ("https", "wss"):
        return True
    proxy = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if proxy:
        name = proxy[0].removeprefix("HTTP_").replace("_", "-").lower().encode()
        return headers.get(name, b"").decode("latin-1") == proxy[1]
    return False


def bearer_token(headers: dict[bytes, bytes]) -> str:
    """The token of an `Authorization: Bearer <token>` header, or ""."""
    scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


async def unauthorized(send: Send) -> None:
    status, body = UNAUTHORIZED
    await respond(send, status, body, www_authenticate='Bearer realm="motionmix-devices"')


async def check_call(
    scope: Scope, send: Send, *, method: str
) -> tuple[dict[bytes, bytes], str] | None:
    """What every device call on a fast path checks first, in the order Django would: the
    method, the transport (Host, HTTPS), and that a bearer token is there at all. Answers the
    refusal itself and returns None, or returns the headers and the token."""
    if scope["method"] != method:
        await respond(
            send, 405, {"error": "method_not_allowed", "detail": f"Use {method}."}, allow=method
        )
        return None
    headers = dict(scope["headers"])
    refusal = transport_refusal(scope, headers)
    if refusal is not None:
        await respond(send, 400, refusal)
        return None
    token = bearer_token(headers)
    if not token:
        await unauthorized(send)
        return None
    return headers, token


async def heartbeat_endpoint(scope: Scope, receive: Receive, send: Send) -> None:
    """POST /api/v1/devices/heartbeat, with the contract's statuses and error body."""
    checked = await check_call(scope, send, method="POST")
    if checked is None:
        return
    headers, token = checked
    content_type = headers.get(b"content-type", b"").split(b";")[0].strip().decode("latin-1")
    if content_type != "application/json":
        await respond(
            send,
            415,
            {
                "error": "unsupported_media_type",
                "detail": f"Send the body as application/json, not {content_type or 'nothing'}.",
            },
        )
        return
    declared = _declared_length(headers)
    if declared is None:
        await respond(
            send,
            400,
            {"error": "bad_request", "detail": "Content-Length must be a whole number of bytes."},
        )
        return
    body = None if declared > JSON_BODY_LIMIT else await _read_body(receive, JSON_BODY_LIMIT)
    if body is None:
        await respond(
            send,
            413,
            {"error": "too_large", "detail": f"The body is over {JSON_BODY_LIMIT} bytes."},
        )
        return
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        await respond(
            send, 400, {"error": "bad_json", "detail": f"The body is not valid JSON: {exc}."}
        )
        return
    if not isinstance(data, dict):
        await respond(send, 400, {"error": "bad_json", "detail": "The body must be a JSON object."})
        return
    try:
        beat = HeartbeatIn.model_validate(data)
    except ValidationError as exc:
        await respond(send, 400, {"error": "invalid", "detail": format_errors(exc)})
        return
    loop = asyncio.get_running_loop()
    item = Beat(
        token_hash=services.hash_token(token),
        beat=heartbeat_from_schema(beat),
        received_at=timezone.now(),
        future=loop.create_future(),
    )
    writer_for(loop).submit(item)
    status, answer = await item.future
    if status == 200:
        answer = {"server_time": time.time(), **answer}
    extra = {"www_authenticate": 'Bearer realm="motionmix-devices"'} if status == 401 else {}
    await respond(send, status, answer, **extra)
