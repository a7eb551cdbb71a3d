"""A web process's hero feed: WHIP and WHEP requests go to the one relay (or an external
WHIP/WHEP SFU) at MOTIONMIX_HERO_RELAY_URL, whichever web process they reach.

The request goes on as it came (method, path, query, body, the device's token or the
operator's cookie, and where it came from in X-Forwarded-*), so the relay authorizes it exactly
as it would a direct one; its answer comes back unchanged. Bodies stream both ways."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from typing import Any, Final
from urllib.parse import urlsplit

from director.scaled import http1
from director.scaled.proxy import FORWARDED, is_relay_path
from motionmix.types import ASGIApp, Receive, Scope, Send

CONNECT_S: Final = 5.0
ANSWER_S: Final = 60.0  # the relay gathers ICE candidates before it answers: seconds, not more


class RelayForwarder:
    def __init__(self, app: ASGIApp, *, relay_url: str) -> None:
        parts = urlsplit(relay_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"MOTIONMIX_HERO_RELAY_URL must be an http(s) URL with a host, not {relay_url!r}"
            )
        self.app = app
        self.relay_url = relay_url
        self.host = parts.hostname
        self.tls = parts.scheme == "https"
        self.port = parts.port or (443 if self.tls else 80)
        self.base = parts.path.rstrip("/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and is_relay_path(scope["path"]):
            await self.forward(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def forward(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    self.host,
                    self.port,
                    ssl=ssl.create_default_context() if self.tls else None,
                    limit=http1.MAX_HEAD,
                ),
                CONNECT_S,
            )
        except (OSError, TimeoutError) as exc:
            await _unavailable(
                send, f"The hero relay at {self.relay_url} is not reachable ({exc})."
            )
            return
        try:
            await self._exchange(scope, receive, send, reader, writer)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _exchange(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        raw: bytes = scope.get("raw_path") or scope["path"].encode()
        target = self.base.encode() + raw
        if scope.get("query_string"):
            target += b"?" + scope["query_string"]
        headers = [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in scope["headers"]
            if k.decode("latin-1").lower() not in http1.HOP_BY_HOP | FORWARDED
        ]
        length = next((v for k, v in headers if k.lower() == "content-length"), None)
        headers = [(k, v) for k, v in headers if k.lower() != "transfer-encoding"]
        if length is None:
            headers.append(("Transfer-Encoding", "chunked"))
        client = scope.get("client") or ("127.0.0.1", 0)
        headers += [
            ("X-Forwarded-For", str(client[0])),
            ("X-Forwarded-Proto", str(scope.get("scheme", "http"))),
            ("Connection", "close"),
        ]
        writer.write(
            http1.encode_head(f"{scope['method']} {target.decode('latin-1')} HTTP/1.1", headers)
        )
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk: bytes = message.get("body", b"")
            if length is None and chunk:
                writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            elif chunk:
                writer.write(chunk)
            await writer.drain()
            if not message.get("more_body", False):
                break
        if length is None:
            writer.write(b"0\r\n\r\n")
        await writer.drain()
        try:
            answer = await asyncio.wait_for(http1.read_head(reader), ANSWER_S)
            if answer is None:
                raise http1.BadMessage("it closed the connection without answering")
            status = http1.status_of(answer)
            framing = http1.response_framing(answer, method=scope["method"])
        except (http1.BadMessage, TimeoutError, ConnectionError) as exc:
            await _unavailable(
                send, f"The hero relay at {self.relay_url} failed: {exc or 'timeout'}."
            )
            return
        out = [
            (k.lower().encode("latin-1"), v.encode("latin-1"))
            for k, v in answer.without(http1.HOP_BY_HOP | {"transfer-encoding"})
        ]
        await send({"type": "http.response.start", "status": status, "headers": out})
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            async for chunk in http1.body(reader, framing, raw=False):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})


async def _unavailable(send: Send, detail: str) -> None:
    body = json.dumps({"error": "unavailable", "detail": detail + " Try again shortly."}).encode()
    headers: list[Any] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body})
