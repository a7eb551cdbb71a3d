"""Request size limits, enforced at the ASGI layer before anything reads the body.

Django's ASGI handler spools the whole body (to memory, then disk) before any view runs, so a
view's own size check comes too late to protect the server: a 10 GB post to any URL would be
written out first. Here every HTTP request gets the cap of its endpoint:

- a declared `Content-Length` over the cap is answered 413 at once, unread;
- a body without one (chunked) is counted as it arrives, and the first chunk past the cap
  answers 413; the application behind sees the client hang up, and nothing more is read;
- a `Content-Length` that is not one whole number answers 400.

Device and Ghost API calls (and the JSON calls of the Live Director: WHEP, music cues) answer
with the contract's error body `{"error", "detail"}`; operator pages with a short text.
The views keep their own checks (with the same limits) for servers that are not this ASGI app.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from django.conf import settings
from django.urls import Resolver404, resolve

from director.api import MULTIPART_OVERHEAD_BYTES as STILL_OVERHEAD_BYTES
from director.hero.sdp import MAX_SDP_BYTES
from director.music.views import CUE_MAX_BYTES
from director.music.views import MULTIPART_OVERHEAD_BYTES as MUSIC_OVERHEAD_BYTES
from motionmix.types import ASGIApp, Message, Receive, Scope, Send

API_PREFIX = "/api/v1/"


@dataclass(frozen=True)
class BodyLimit:
    max_bytes: int
    # What the limit is, for the refusal: "a pose batch is at most 1 MiB".
    rule: str
    # The contract's JSON error body (API calls), else a short plain text (operator pages).
    json: bool


def _size(n: int) -> str:
    for unit, scale in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:g} {unit}"
    return f"{n} bytes"


def _sdp() -> BodyLimit:
    return BodyLimit(MAX_SDP_BYTES, f"an SDP offer is at most {MAX_SDP_BYTES // 1024} KB", True)


def body_limit(path: str) -> BodyLimit:
    """The cap on the body of a request to `path` (settings are read on every call)."""
    if path.startswith(API_PREFIX):
        call = path[len(API_PREFIX) :]
        if call == "stills":
            still = settings.MOTIONMIX_STILL_MAX_BYTES
            return BodyLimit(
                still + STILL_OVERHEAD_BYTES, f"a still may be {_size(still)} at most", True
            )
        if call == "pose":
            pose = settings.MOTIONMIX_POSE_MAX_BODY_BYTES
            return BodyLimit(pose, f"a pose batch is at most {_size(pose)}; split it", True)
        if call == "whip" or call.startswith("whip/"):
            return _sdp()
        api = settings.MOTIONMIX_MAX_BODY_BYTES
        return BodyLimit(api, f"an API call's body is at most {_size(api)}", True)
    try:
        view_name = resolve(path).view_name
    except Resolver404:
        view_name = ""
    if view_name == "director:session_whep":
        return _sdp()
    if view_name == "director:music_cue":
        return BodyLimit(CUE_MAX_BYTES, f"a cue is at most {_size(CUE_MAX_BYTES)}", True)
    if view_name == "director:music_upload":
        music = settings.MOTIONMIX_MUSIC_MAX_BYTES
        return BodyLimit(
            music + MUSIC_OVERHEAD_BYTES, f"a music track may be {_size(music)} at most", False
        )
    form = settings.DATA_UPLOAD_MAX_MEMORY_SIZE or settings.MOTIONMIX_MAX_BODY_BYTES
    return BodyLimit(form, f"a form may send {_size(form)} at most", False)


class BadLength(ValueError):
    """The Content-Length header is not one whole number of bytes."""


def declared_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The body's declared length, None when undeclared (chunked). Raises `BadLength`."""
    values = {value.strip() for name, value in headers if name.lower() == b"content-length"}
    if not values:
        return None
    if len(values) > 1:
        raise BadLength("Send one Content-Length, not several that differ.")
    (value,) = values
    if not value.isdigit():
        shown = value.decode("latin-1")[:40]
        raise BadLength(f"Content-Length must be a whole number of bytes, not {shown!r}.")
    return int(value)


async def refuse(send: Send, status: int, code: str, detail: str, *, as_json: bool) -> None:
    headers = []
    if as_json:
        body = json.dumps({"error": code, "detail": detail}).encode()
        headers.append((b"content-type", b"application/json"))
    else:
        body = detail.encode()
        headers.append((b"content-type", b"text/plain; charset=utf-8"))
        # An htmx page shows it as a toast, as the operator pages' own refusals are shown.
        toast = {"toast": {"level": "error", "message": detail}}
        headers.append((b"hx-trigger", json.dumps(toast).encode()))
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _too_large(limit: BodyLimit, received: str) -> str:
    if limit.json:
        return f"The body is {received}; {limit.rule}."
    return f"The request is {received}; {limit.rule}. Nothing was saved."


class BodyGuard:
    """Wraps one request's `receive` and `send`: counts the body as the application reads it
    and, past the cap, answers 413 itself and tells the application the client hung up (so it
    stops reading and answers nothing; anything it still sends is dropped)."""

    def __init__(self, limit: BodyLimit, receive: Receive, send: Send) -> None:
        self.limit = limit
        self._receive = receive
        self._send = send
        self.received = 0
        self.started = False
        self.cut_off = False
        self.answered = False

    async def receive(self) -> Message:
        if self.cut_off:
            return {"type": "http.disconnect"}
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.limit.max_bytes:
                self.cut_off = True
                if not self.started:
                    self.answered = True
                    detail = _too_large(self.limit, f"over {self.limit.max_bytes} bytes")
                    await refuse(self._send, 413, "too_large", detail, as_json=self.limit.json)
                return {"type": "http.disconnect"}
        return message

    async def send(self, message: Message) -> None:
        if self.answered:
            return
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)


def with_body_limits(app: ASGIApp) -> ASGIApp:
    """`app` (HTTP only) behind the per-endpoint body caps of `body_limit`."""

    async def limited(scope: Scope, receive: Receive, send: Send) -> None:
        limit = body_limit(scope["path"])
        try:
            declared = declared_length(scope.get("headers", []))
        except BadLength as exc:
            await refuse(send, 400, "bad_request", str(exc), as_json=limit.json)
            return
        if declared is not None and declared > limit.max_bytes:
            detail = _too_large(limit, f"{declared} bytes")
            await refuse(send, 413, "too_large", detail, as_json=limit.json)
            return
        guard = BodyGuard(limit, receive, send)
        await app(scope, guard.receive, guard.send)

    return limited
