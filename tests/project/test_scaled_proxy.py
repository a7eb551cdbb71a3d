"""The scaled profile's reverse proxy (director/scaled/proxy.py) in front of real Daphne
servers (tests/support/echo_asgi.py): bodies streamed both ways, keep-alive, the forwarded
headers, WebSocket tunnelling, round robin with failover, and the hero feed's paths."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import websockets

from director.scaled.proxy import Backend, ReverseProxy
from tests.support.server import ROOT, free_port


def _daphne(name: str, workdir: Path) -> tuple[Backend, subprocess.Popen[bytes]]:
    port = free_port()
    log = (workdir / f"{name}.log").open("ab")
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("daphne")),
            "-b",
            "127.0.0.1",
            "-p",
            str(port),
            "--proxy-headers",
            "tests.support.echo_asgi:application",
        ],
        cwd=ROOT,
        env={**os.environ, "ECHO_NAME": name},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return Backend(name=name, host="127.0.0.1", port=port), proc


@pytest.fixture(scope="module")
def backends(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Backend]]:
    workdir = tmp_path_factory.mktemp("proxy")
    started = [_daphne(name, workdir) for name in ("web-1", "web-2", "relay")]
    try:
        deadline = time.monotonic() + 30
        for backend, proc in started:
            while True:
                assert proc.poll() is None, (workdir / f"{backend.name}.log").read_text()
                with contextlib.suppress(httpx.HTTPError):
                    httpx.get(f"{backend.url}/", timeout=1)
                    break
                assert time.monotonic() < deadline, f"{backend.name} did not start"
                time.sleep(0.1)
        yield {backend.name: backend for backend, _ in started}
    finally:
        for _, proc in started:
            proc.terminate()
            proc.wait(timeout=10)


@contextlib.asynccontextmanager
async def _proxy(web: list[Backend], relay: Backend | None = None) -> AsyncIterator[str]:
    proxy = ReverseProxy(web=web, relay=relay)
    port = await proxy.start("127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await proxy.close()


def test_requests_alternate_between_web_backends_with_the_forwarded_headers(
    backends: dict[str, Backend],
) -> None:
    async def run() -> None:
        async with (
            _proxy([backends["web-1"], backends["web-2"]]) as url,
            httpx.AsyncClient(base_url=url) as client,
        ):
            seen = []
            for _ in range(4):
                response = await client.get(
                    "/page?x=1", headers={"X-Forwarded-For": "6.6.6.6", "Host": "director.test"}
                )
                report = response.json()
                seen.append(response.headers["X-MotionMix-Backend"])
                assert report["backend"] == response.headers["X-MotionMix-Backend"]
                # The client's own claim is dropped: Daphne sees the proxy's view of it.
                assert report["client"] == "127.0.0.1"
                assert report["headers"]["x-forwarded-proto"] == "http"
                assert report["headers"]["x-forwarded-host"] == "director.test"
                assert report["headers"]["host"] == "director.test"
            assert sorted(seen) == ["web-1", "web-1", "web-2", "web-2"]
            assert seen[0] != seen[1]

    asyncio.run(run())


def test_a_chunked_upload_and_a_streamed_answer_pass_through_whole(
    backends: dict[str, Backend],
) -> None:
    payload = os.urandom(3 * 1024 * 1024 + 17)

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(payload), 100_000):
            yield payload[start : start + 100_000]

    async def run() -> None:
        async with _proxy([backends["web-1"]]) as url, httpx.AsyncClient(base_url=url) as client:
            # No length given: httpx sends the body chunked.
            upload = await client.post("/upload", content=pieces())
            assert upload.status_code == 200
            assert upload.json()["length"] == len(payload)
            assert upload.json()["sha256"] == hashlib.sha256(payload).hexdigest()
            async with client.stream("GET", "/download?chunks=40") as download:
                assert download.headers.get("transfer-encoding") == "chunked"
                received = b"".join([chunk async for chunk in download.aiter_bytes()])
            assert len(received) == 40 * 65536
            assert received[-1] == 39

    asyncio.run(run())


def test_one_client_connection_carries_several_requests(backends: dict[str, Backend]) -> None:
    async def run() -> None:
        async with _proxy([backends["web-1"], backends["web-2"]]) as url:
            port = int(url.rsplit(":", 1)[1])
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            request = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n"
            writer.write(request)
            paths = []
            for _ in range(2):
                head = await reader.readuntil(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200")
                assert b"Connection: keep-alive" in head
                length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
                paths.append(json.loads(await reader.readexactly(length))["path"])
            writer.close()
            assert paths == ["/a", "/b"]

    asyncio.run(run())


def test_a_websocket_is_tunnelled(backends: dict[str, Backend]) -> None:
    async def run() -> None:
        async with (
            _proxy([backends["web-2"]]) as url,
            websockets.connect(url.replace("http", "ws") + "/ws/x/") as ws,
        ):
            for text in ("one", "two"):
                await ws.send(text)
                assert await asyncio.wait_for(ws.recv(), 5) == f"web-2:{text}"

    asyncio.run(run())


def test_a_backend_that_is_down_is_skipped_and_none_left_answers_502(
    backends: dict[str, Backend],
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        down = Backend(name="web-0", host="127.0.0.1", port=sock.getsockname()[1])

    async def run() -> None:
        async with (
            _proxy([down, backends["web-1"]]) as url,
            httpx.AsyncClient(base_url=url) as client,
        ):
            answered = [await client.get("/") for _ in range(3)]
            assert {r.headers["X-MotionMix-Backend"] for r in answered} == {"web-1"}
        async with _proxy([down]) as url, httpx.AsyncClient(base_url=url) as client:
            refused = await client.get("/")
            assert refused.status_code == 502
            assert refused.json()["error"] == "bad_gateway"
            assert "web-0" in refused.json()["detail"]

    asyncio.run(run())


def test_the_hero_feeds_paths_go_to_the_relay(backends: dict[str, Backend]) -> None:
    async def run() -> None:
        async with (
            _proxy([backends["web-1"]], relay=backends["relay"]) as url,
            httpx.AsyncClient(base_url=url) as client,
        ):
            for path in (
                "/api/v1/whip",
                "/api/v1/whip/abc",
                "/sessions/1f/whep",
                "/sessions/1f/whep/v1",
            ):
                assert (await client.post(path, content=b"v=0")).json()["backend"] == "relay"
            for path in ("/api/v1/whipped", "/sessions/1f/", "/api/v1/devices/heartbeat"):
                assert (await client.post(path, content=b"{}")).json()["backend"] == "web-1"

    asyncio.run(run())
