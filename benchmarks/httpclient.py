"""A minimal HTTP/1.1 keep-alive client for load generation: asyncio streams, one request in
flight per connection, Content-Length (or chunked) framing.

It does a fraction of httpx's work per request, so that a benchmark measures the server and
not its own client.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

# Connections are opened a few at a time: Twisted listens with a backlog of 50.
CONNECT_CONCURRENCY = 16


class ProtocolError(Exception):
    """The server answered something this client does not parse."""


@dataclass
class Response:
    status: int
    body: bytes
    close: bool


class Connection:
    """One keep-alive connection; one request in flight at a time, as a phone does."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None

    async def reopen(self) -> None:
        await self.close()
        await self.open()

    async def request(self, raw: bytes) -> Response:
        if self.reader is None or self.writer is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        self.writer.write(raw)
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise ProtocolError(f"not an HTTP/1.x status line: {lines[0]!r}")
        status = int(parts[1])
        length: int | None = None
        chunked = False
        close = parts[0] == b"HTTP/1.0"
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                close = value.strip().lower() == b"close"
        if chunked:
            body = await self._read_chunked()
        elif length is not None:
            body = await self.reader.readexactly(length)
        else:
            raise ProtocolError("a response without Content-Length or chunked framing")
        return Response(status=status, body=body, close=close)

    async def _read_chunked(self) -> bytes:
        assert self.reader is not None
        chunks: list[bytes] = []
        for _ in range(10_000):
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")  # no trailers expected
                return b"".join(chunks)
            chunks.append(await self.reader.readexactly(size))
            await self.reader.readexactly(2)
        raise ProtocolError("a chunked body of more than 10,000 chunks")


def http_request(
    method: str, path: str, host: str, headers: dict[str, str], body: bytes = b""
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def open_all(connections: list[Connection], *, timeout_s: float) -> None:
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def one(conn: Connection) -> None:
        async with gate, asyncio.timeout(timeout_s):
            await conn.open()

    await asyncio.gather(*(one(conn) for conn in connections))
