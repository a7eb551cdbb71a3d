"""A small reverse proxy for the scaled profile: HTTP/1.1 with keep-alive towards clients,
one backend connection per request, bodies streamed both ways, WebSocket upgrades tunnelled as
raw bytes after the 101, round robin over the web processes with failover when one is down,
and the hero feed's WHIP/WHEP paths sent to the relay.

It is the edge of the local rehearsal: it sets X-Forwarded-For/-Proto/-Host from what it sees
(clients' own copies are dropped), unless `trust_forwarded` says a TLS terminator in front of it
has set them already. Every answer says which backend gave it (`X-MotionMix-Backend`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from director.scaled import http1

logger = logging.getLogger(__name__)

BACKEND_HEADER: Final = "X-MotionMix-Backend"
CONNECT_S: Final = 5.0
TUNNEL_CLOSE_S: Final = 5.0
IDLE_S: Final = 75.0  # a keep-alive client connection with no request for this long is closed
FORWARDED: Final = frozenset({"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"})
# The hero feed: WHIP (devices) and WHEP (operators), each with its resource URLs.
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
RELAY_PATHS: Final = re.compile(r"^/api/v1/whip(/|$)|^/sessions/[^/]+/whep(/|$)")


@dataclass(frozen=True)
class Backend:
    name: str
    host: str
    port: int

    @classmethod
    def from_url(cls, name: str, url: str) -> Backend:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"{name}: give a plain http:// URL with a host, not {url!r}")
        return cls(name=name, host=parts.hostname, port=parts.port or 80)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def is_relay_path(target: str) -> bool:
    return RELAY_PATHS.match(target.split("?", 1)[0]) is not None


class ReverseProxy:
    def __init__(
        self,
        *,
        web: list[Backend],
        relay: Backend | None,
        scheme: str = "http",
        trust_forwarded: bool = False,
    ) -> None:
        if not web:
            raise ValueError("the proxy needs at least one web backend")
        self.web = web
        self.relay = relay
        self.scheme = scheme
        self.trust_forwarded = trust_forwarded
        self._turn = itertools.count()
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(
            self._client, host, port, limit=http1.MAX_HEAD, reuse_address=True
        )
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def candidates(self, target: str) -> list[Backend]:
        """Where a request goes, in the order to try: the relay for the hero feed's paths
        (when there is one), else every web backend starting from the next in turn."""
        if self.relay is not None and is_relay_path(target):
            return [self.relay]
        start = next(self._turn) % len(self.web)
        return self.web[start:] + self.web[:start]

    # -- one client connection --------------------------------------------------------------

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        peer = writer.get_extra_info("peername")
        client_ip = peer[0] if isinstance(peer, tuple) else "127.0.0.1"
        try:
            while True:
                try:
                    head = await asyncio.wait_for(http1.read_head(reader), IDLE_S)
                except TimeoutError:
                    return
                if head is None:
                    return
                if not await self._exchange(head, reader, writer, client_ip):
                    return
        except http1.BadMessage as exc:
            with contextlib.suppress(ConnectionError):
                await _answer(writer, exc.status, "bad_request", str(exc))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away
        except asyncio.CancelledError:
            pass  # the proxy is closing: this connection ends here, quietly
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _open(self, backend: Backend) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.wait_for(
            asyncio.open_connection(backend.host, backend.port, limit=http1.MAX_HEAD), CONNECT_S
        )

    def _forward_headers(self, head: http1.Head, client_ip: str) -> list[tuple[str, str]]:
        headers = head.without(http1.HOP_BY_HOP | FORWARDED)
        incoming = {k.lower(): v for k, v in head.headers if k.lower() in FORWARDED}
        if self.trust_forwarded and "x-forwarded-for" in incoming:
            headers.append(("X-Forwarded-For", f"{incoming['x-forwarded-for']}, {client_ip}"))
            headers.append(("X-Forwarded-Proto", incoming.get("x-forwarded-proto", self.scheme)))
            if "x-forwarded-host" in incoming:
                headers.append(("X-Forwarded-Host", incoming["x-forwarded-host"]))
        else:
            headers.append(("X-Forwarded-For", client_ip))
            headers.append(("X-Forwarded-Proto", self.scheme))
            if head.get("host"):
                headers.append(("X-Forwarded-Host", head.get("host") or ""))
        return headers

    async def _exchange(
        self,
        head: http1.Head,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        client_ip: str,
    ) -> bool:
        """Carry one request and its answer. True when the client connection can carry
        another request.

        A backend that refuses the connection is skipped for the next one. So is one that
        fails before answering a request without a body and with a safe method (a process
        killed while the connection was being made): nothing of it can have taken effect."""
        method, target, version = http1.request_line(head)
        framing = http1.request_framing(head)
        connection = head.tokens("connection")
        keep_alive = version == "HTTP/1.1" and "close" not in connection
        upgrade = "upgrade" in connection and head.get("upgrade") is not None
        retryable = method in SAFE_METHODS and framing == 0
        headers = self._forward_headers(head, client_ip)
        if upgrade:
            headers += [("Connection", "Upgrade"), ("Upgrade", head.get("upgrade") or "")]
        else:
            headers.append(("Connection", "close"))
        request_head = http1.encode_head(f"{method} {target} {version}", headers)
        failures: list[str] = []
        for backend in self.candidates(target):
            try:
                back_reader, back_writer = await self._open(backend)
            except (OSError, TimeoutError) as exc:
                failures.append(f"{backend.name}: {exc or 'timeout'}")
                logger.warning("proxy: %s (%s) is down: %s", backend.name, backend.url, exc)
                continue
            try:
                outcome = await self._through(
                    backend,
                    (method, framing, upgrade, keep_alive, retryable),
                    request_head,
                    (reader, writer),
                    (back_reader, back_writer),
                )
            finally:
                back_writer.close()
            if isinstance(outcome, bool):
                return outcome
            failures.append(f"{backend.name}: {outcome}")
            logger.warning("proxy: %s failed before answering: %s", backend.name, outcome)
            if not retryable:
                break
        await _answer(
            writer,
            502,
            "bad_gateway",
            "No backend answered (" + "; ".join(failures) + "); the server may be starting or "
            "stopping: try again shortly.",
        )
        return False

    async def _through(
        self,
        backend: Backend,
        request: tuple[str, int, bool, bool, bool],
        request_head: bytes,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        back: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> bool | str:
        """One try on one backend: whether the client connection goes on, or (a string) why
        the backend failed before anything of its answer went to the client."""
        method, framing, upgrade, keep_alive, _ = request
        reader, writer = client
        back_reader, back_writer = back
        upload: asyncio.Task[None] | None = None
        answering: asyncio.Task[http1.Head | None] | None = None
        try:
            back_writer.write(request_head)
            upload = asyncio.create_task(_pump(http1.body(reader, framing, raw=True), back_writer))
            answering = asyncio.create_task(http1.read_head(back_reader))
            await asyncio.wait({upload, answering}, return_when=asyncio.FIRST_COMPLETED)
            if upload.done() and upload.exception() is not None and not answering.done():
                if framing == 0:
                    return f"{upload.exception()}"  # the backend went while taking the head
                return False  # the client went away mid-body: nothing more comes of it
            try:
                answer = await answering
            except (ConnectionError, http1.BadMessage) as exc:
                return str(exc) or type(exc).__name__
            if answer is None:
                return "closed without answering"
            try:
                status = http1.status_of(answer)
                body_framing = http1.response_framing(answer, method=method)
            except http1.BadMessage as exc:
                return str(exc)
            out = answer.without(http1.HOP_BY_HOP)
            out.append((BACKEND_HEADER, backend.name))
            if upgrade and status == 101:
                out += [("Connection", "Upgrade"), ("Upgrade", answer.get("upgrade") or "")]
                writer.write(http1.encode_head(answer.start, out))
                await writer.drain()
                await _tunnel(reader, writer, back_reader, back_writer)
                return False
            keep_alive = keep_alive and body_framing != http1.UNTIL_CLOSE
            out.append(("Connection", "keep-alive" if keep_alive else "close"))
            writer.write(http1.encode_head(answer.start, out))
            await _pump(http1.body(back_reader, body_framing, raw=True), writer)
            if not upload.done():
                # Answered before the request body was read (a refusal): the rest of that
                # body is still on the client connection, which cannot carry another request.
                return False
            return keep_alive and upload.exception() is None
        except (ConnectionError, asyncio.IncompleteReadError, http1.BadMessage):
            return False  # mid-answer: the client sees the connection end
        finally:
            for pending in (upload, answering):
                if pending is not None and not pending.done():
                    pending.cancel()
            await asyncio.gather(*(t for t in (upload, answering) if t), return_exceptions=True)


async def _pump(chunks: AsyncIterator[bytes], writer: asyncio.StreamWriter) -> None:
    async for chunk in chunks:
        writer.write(chunk)
        await writer.drain()
    await writer.drain()


async def _tunnel(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    back_reader: asyncio.StreamReader,
    back_writer: asyncio.StreamWriter,
) -> None:
    """Pipe bytes both ways until either side closes (a WebSocket after its 101)."""

    async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while chunk := await src.read(http1.CHUNK):
                dst.write(chunk)
                await dst.drain()
            if dst.can_write_eof():
                dst.write_eof()

    tasks = [
        asyncio.create_task(pipe(reader, back_writer)),
        asyncio.create_task(pipe(back_reader, writer)),
    ]
    try:
        _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if pending:
            # One side has finished; the other gets a moment to finish its close handshake.
            await asyncio.wait(pending, timeout=TUNNEL_CLOSE_S)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _answer(writer: asyncio.StreamWriter, status: int, code: str, detail: str) -> None:
    body = json.dumps({"error": code, "detail": detail}).encode()
    reason = {400: "Bad Request", 431: "Request Header Fields Too Large", 501: "Not Implemented"}
    writer.write(
        http1.encode_head(
            f"HTTP/1.1 {status} {reason.get(status, 'Bad Gateway')}",
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
                ("Connection", "close"),
            ],
        )
        + body
    )
    await writer.drain()
