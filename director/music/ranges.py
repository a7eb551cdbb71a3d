"""Byte ranges (RFC 9110 §14) for the music file, which the <audio> element needs to seek.

Django's FileResponse answers whole files only. One range is served (a 206); several ranges,
or a header that does not parse, get the whole file (a 200), as the RFC allows; a range that
starts past the end is a 416. The body is read in chunks on a worker thread and handed to the
server as it goes: never the whole file in memory, never a blocking read on the event loop.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import IO

from django.http import HttpResponse, StreamingHttpResponse

CHUNK_BYTES = 256 * 1024
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class Unsatisfiable(Exception):
    pass


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """The one range `header` asks for, as (first, last) inclusive, or None for the whole file.
    Raises Unsatisfiable for a range that starts at or past the end."""
    match = _RANGE.match(header.strip().replace(" ", ""))
    if match is None:
        return None  # several ranges or another unit: the whole file
    first_text, last_text = match.groups()
    if not first_text and not last_text:
        return None
    if not first_text:
        suffix = int(last_text)
        if suffix == 0:
            raise Unsatisfiable
        return max(0, size - suffix), size - 1
    first = int(first_text)
    last = int(last_text) if last_text else size - 1
    if last_text and last < first:
        return None  # invalid: ignored, the whole file
    if first >= size:
        raise Unsatisfiable
    return first, min(last, size - 1)


async def _read(handle: IO[bytes], start: int, length: int) -> AsyncIterator[bytes]:
    try:
        await asyncio.to_thread(handle.seek, start)
        left = length
        while left > 0:
            chunk = await asyncio.to_thread(handle.read, min(CHUNK_BYTES, left))
            if not chunk:
                break
            left -= len(chunk)
            yield chunk
    finally:
        handle.close()


def ranged_file_response(
    handle: IO[bytes], *, size: int, content_type: str, range_header: str, filename: str
) -> HttpResponse:
    """Answer `handle` (opened, positioned anywhere; closed when done) whole or in part."""
    try:
        wanted = parse_range(range_header, size) if range_header else None
    except Unsatisfiable:
        handle.close()
        refused = HttpResponse(status=416)
        refused["Content-Range"] = f"bytes */{size}"
        refused["Accept-Ranges"] = "bytes"
        return refused
    first, last = wanted if wanted is not None else (0, size - 1)
    length = max(0, last - first + 1)
    response = StreamingHttpResponse(
        _read(handle, first, length),
        status=206 if wanted is not None else 200,
        content_type=content_type,
    )
    response["Content-Length"] = str(length)
    response["Accept-Ranges"] = "bytes"
    if wanted is not None:
        response["Content-Range"] = f"bytes {first}-{last}/{size}"
    ascii_name = filename.encode("ascii", "replace").decode().replace('"', "")
    response["Content-Disposition"] = f'inline; filename="{ascii_name}"'
    return response
