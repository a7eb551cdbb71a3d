"""Just enough HTTP/1.1 for the reverse proxy and the relay forwarder: read a message head,
tell how its body is framed, and stream that body (as it came, or decoded).

Nothing here holds a whole body in memory; a head is bounded by MAX_HEAD."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Final

MAX_HEAD: Final = 64 * 1024
CHUNK: Final = 64 * 1024
CHUNKED: Final = -1
UNTIL_CLOSE: Final = -2

# Headers that describe one connection, never forwarded as they are (RFC 9110 7.6.1).
# Content-Length and Transfer-Encoding are kept by whoever passes a body through unchanged.
HOP_BY_HOP: Final = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade"}
)


class BadMessage(Exception):
    """The peer sent something that is not HTTP/1.x; `status` is the answer to give it."""

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Head:
    start: str
    headers: list[tuple[str, str]]

    def get(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    def tokens(self, name: str) -> set[str]:
        name = name.lower()
        found: set[str] = set()
        for key, value in self.headers:
            if key.lower() == name:
                found.update(t.strip().lower() for t in value.split(",") if t.strip())
        return found

    def without(self, names: set[str] | frozenset[str]) -> list[tuple[str, str]]:
        return [(k, v) for k, v in self.headers if k.lower() not in names]


async def read_head(reader: asyncio.StreamReader) -> Head | None:
    """The next message head, or None if the peer closed before sending a byte of one."""
    try:
        data = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial.strip():
            return None
        raise BadMessage("The connection closed in the middle of a message head.") from None
    except asyncio.LimitOverrunError:
        raise BadMessage("The message head is larger than 64 KiB.", status=431) from None
    lines = data.decode("latin-1").split("\r\n")
    while lines and not lines[0]:
        lines.pop(0)  # stray CRLFs between messages are allowed (RFC 9112 2.2)
    if not lines:
        return None
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line:
            continue
        if line[0] in " \t" or ":" not in line:
            raise BadMessage(f"Not a header line: {line[:80]!r}.")
        key, _, value = line.partition(":")
        if not key or key != key.strip():
            raise BadMessage(f"Not a header name: {key[:80]!r}.")
        headers.append((key, value.strip()))
    return Head(start=lines[0], headers=headers)


def request_line(head: Head) -> tuple[str, str, str]:
    parts = head.start.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadMessage(f"Not an HTTP/1.x request line: {head.start[:80]!r}.")
    return parts[0], parts[1], parts[2]


def status_of(head: Head) -> int:
    parts = head.start.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise BadMessage(f"Not an HTTP/1.x status line: {head.start[:80]!r}.", status=502)
    return int(parts[1])


def _length(head: Head) -> int | None:
    if "chunked" in head.tokens("transfer-encoding"):
        return CHUNKED
    if head.get("transfer-encoding"):
        raise BadMessage("Only the chunked transfer coding is understood.", status=501)
    values = {v.strip() for k, v in head.headers if k.lower() == "content-length"}
    if not values:
        return None
    if len(values) != 1 or not next(iter(values)).isdigit():
        raise BadMessage("Conflicting or malformed Content-Length.")
    return int(next(iter(values)))


def request_framing(head: Head) -> int:
    length = _length(head)
    return 0 if length is None else length


def response_framing(head: Head, *, method: str) -> int:
    status = status_of(head)
    if method == "HEAD" or status < 200 or status in (204, 304):
        return 0
    length = _length(head)
    return UNTIL_CLOSE if length is None else length


async def body(reader: asyncio.StreamReader, framing: int, *, raw: bool) -> AsyncIterator[bytes]:
    """The body's bytes as they arrive. `raw`: with the chunked framing itself (to pass it on
    unchanged); otherwise only the payload. A body cut short raises IncompleteReadError."""
    if framing == UNTIL_CLOSE:
        while chunk := await reader.read(CHUNK):
            yield chunk
        return
    if framing >= 0:
        left = framing
        while left:
            chunk = await reader.read(min(CHUNK, left))
            if not chunk:
                raise asyncio.IncompleteReadError(b"", left)
            left -= len(chunk)
            yield chunk
        return
    while True:
        line = await reader.readuntil(b"\r\n")
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise BadMessage("A malformed chunk size.") from None
        if raw:
            yield line
        if size == 0:
            while True:  # trailers, up to the empty line
                trailer = await reader.readuntil(b"\r\n")
                if raw:
                    yield trailer
                if trailer == b"\r\n":
                    return
        left = size
        while left:
            chunk = await reader.read(min(CHUNK, left))
            if not chunk:
                raise asyncio.IncompleteReadError(b"", left)
            left -= len(chunk)
            yield chunk
        end = await reader.readexactly(2)
        if end != b"\r\n":
            raise BadMessage("A chunk without its CRLF.")
        if raw:
            yield end


def encode_head(start: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [start, *(f"{k}: {v}" for k, v in headers), "", ""]
    return "\r\n".join(lines).encode("latin-1")
