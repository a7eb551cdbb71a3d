"""A tiny ASGI application for the reverse proxy's tests, served by a real Daphne: it says who it
is (ECHO_NAME), what it received (method, path, headers, the body's length and sha256), streams
`?chunks=N` pieces of 64 KiB back, and echoes WebSocket messages."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any
from urllib.parse import parse_qs

NAME = os.environ.get("ECHO_NAME", "echo")


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        return
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "text": f"{NAME}:{message.get('text')}"})
    digest, length = hashlib.sha256(), 0
    while True:
        message = await receive()
        body = message.get("body", b"")
        digest.update(body)
        length += len(body)
        if not message.get("more_body"):
            break
    query = parse_qs(scope["query_string"].decode())
    chunks = int(query.get("chunks", ["0"])[0])
    report = {
        "backend": NAME,
        "method": scope["method"],
        "path": scope["path"],
        "client": scope["client"][0] if scope.get("client") else None,
        "scheme": scope["scheme"],
        "headers": {k.decode(): v.decode() for k, v in scope["headers"]},
        "length": length,
        "sha256": digest.hexdigest(),
    }
    # No Content-Length when streaming: Daphne answers chunked.
    headers = [(b"content-type", b"application/json"), (b"x-echo", NAME.encode())]
    data = json.dumps(report).encode()
    if not chunks:
        headers.append((b"content-length", str(len(data)).encode()))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for n in range(chunks):
        await send(
            {"type": "http.response.body", "body": bytes([n % 256]) * 65536, "more_body": True}
        )
    await send({"type": "http.response.body", "body": b"" if chunks else data})
