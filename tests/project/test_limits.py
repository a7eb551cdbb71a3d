"""Request size limits, through the real ASGI application: every endpoint's body is capped
before anything reads it (motionmix/limits.py), by its declared length or, for a chunked body,
as it arrives; API calls answer the contract's error body, operator pages a short text."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.test import Client

from devices.heartbeats import writers_stop
from devices.models import Device, PairingFailure, RegisterAttempt
from devices.services import pairing_code_get_or_rotate
from motionmix.asgi import application
from tests.devices.support import assert_error
from tests.support.api import register_body

CHUNK = 16 * 1024
KIB = 1024
MIB = 1024 * 1024


@dataclass
class Exchange:
    """One request through the ASGI app, with the body fed a chunk at a time as it is read."""

    chunks_read: int = 0
    messages: list[dict[str, Any]] = field(default_factory=list)

    @property
    def status(self) -> int:
        starts = [m for m in self.messages if m["type"] == "http.response.start"]
        assert len(starts) == 1, self.messages
        return int(starts[0]["status"])

    @property
    def headers(self) -> dict[str, str]:
        start = next(m for m in self.messages if m["type"] == "http.response.start")
        return {k.decode(): v.decode() for k, v in start["headers"]}

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages if m["type"].endswith("body"))

    def error(self) -> dict[str, str]:
        assert self.headers["content-type"] == "application/json", self.headers
        body = json.loads(self.body)
        assert set(body) == {"error", "detail"} and body["detail"], body
        return body


async def call(
    path: str,
    *,
    size: int = 0,
    body: bytes | None = None,
    declared: bytes | None = b"",
    content_type: bytes = b"application/json",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> Exchange:
    """POST `body` (or `size` spaces) in CHUNK pieces; `declared` None sends no Content-Length
    (chunked), b"" the true length, anything else as given."""
    if body is None:
        body = b" " * size
    exchange = Exchange()
    pieces = [body[offset : offset + CHUNK] for offset in range(0, len(body), CHUNK)] or [b""]
    raw = [(b"host", b"testserver"), (b"content-type", content_type), *(headers or [])]
    if declared is not None:
        raw.append((b"content-length", declared or str(len(body)).encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": raw,
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }

    async def receive() -> dict[str, Any]:
        if exchange.chunks_read < len(pieces):
            exchange.chunks_read += 1
            more = exchange.chunks_read < len(pieces)
            return {
                "type": "http.request",
                "body": pieces[exchange.chunks_read - 1],
                "more_body": more,
            }
        await asyncio.sleep(30)  # the client keeps the connection open; no test waits this long
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        exchange.messages.append(message)

    await asyncio.wait_for(application(scope, receive, send), timeout=20)
    return exchange


@pytest.fixture(autouse=True)
def _stop_writers() -> Iterator[None]:
    yield
    writers_stop()


# --- Declared too large: refused unread -------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "size", "rule"),
    [
        ("/api/v1/devices/register", 64 * KIB + 1, "an API call's body is at most 64 KiB"),
        ("/api/v1/devices/commands/x/ack", 64 * KIB + 1, "an API call's body is at most 64 KiB"),
        ("/api/v1/ghost/proposals", 64 * KIB + 1, "an API call's body is at most 64 KiB"),
        ("/api/v1/devices/heartbeat", 64 * KIB + 1, "an API call's body is at most 64 KiB"),
        ("/api/v1/pose", MIB + 1, "a pose batch is at most 1 MiB"),
        ("/api/v1/whip", 64 * KIB + 1, "an SDP offer is at most 64 KB"),
        ("/api/v1/stills", 80 * MIB + 128 * KIB + 1, "a still may be 80 MiB at most"),
        ("/api/v1/no-such-call", 64 * KIB + 1, "an API call's body is at most 64 KiB"),
        (f"/sessions/{uuid.uuid4()}/whep", 64 * KIB + 1, "an SDP offer is at most 64 KB"),
        (f"/sessions/{uuid.uuid4()}/music/cue", 4 * KIB + 1, "a cue is at most 4 KiB"),
    ],
)
async def test_a_declared_body_over_the_endpoints_cap_is_refused_unread_in_the_contract_body(
    path: str, size: int, rule: str
) -> None:
    exchange = await call(path, size=size)

    assert exchange.status == 413
    assert exchange.error()["error"] == "too_large"
    assert rule in exchange.error()["detail"]
    assert str(size) in exchange.error()["detail"]
    assert exchange.chunks_read == 0


@pytest.mark.parametrize(
    ("path", "size", "rule"),
    [
        ("/accounts/login/", 2 * MIB + 1, "a form may send 2 MiB at most"),
        ("/admin/login/", 2 * MIB + 1, "a form may send 2 MiB at most"),
        (f"/sessions/{uuid.uuid4()}/start", 2 * MIB + 1, "a form may send 2 MiB at most"),
        (f"/sessions/{uuid.uuid4()}/music/upload", 100 * MIB + 64 * KIB + 1, "100 MiB at most"),
    ],
)
async def test_an_operator_page_over_its_cap_answers_a_short_text_and_a_toast(
    path: str, size: int, rule: str
) -> None:
    exchange = await call(path, size=size, content_type=b"application/x-www-form-urlencoded")

    assert exchange.status == 413
    assert exchange.headers["content-type"] == "text/plain; charset=utf-8"
    text = exchange.body.decode()
    assert rule in text and len(text) < 200
    toast = json.loads(exchange.headers["hx-trigger"])["toast"]
    assert toast == {"level": "error", "message": text}
    assert exchange.chunks_read == 0


async def test_the_caps_follow_the_settings(settings: Any) -> None:
    settings.MOTIONMIX_MAX_BODY_BYTES = 1000
    settings.MOTIONMIX_STILL_MAX_BYTES = 10 * KIB
    settings.MOTIONMIX_MUSIC_MAX_BYTES = 10 * KIB
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 5000

    small_api = await call("/api/v1/devices/register", size=1001)
    small_still = await call("/api/v1/stills", size=10 * KIB + 128 * KIB + 1)
    small_music = await call(f"/sessions/{uuid.uuid4()}/music/upload", size=10 * KIB + 64 * KIB + 1)
    small_form = await call("/accounts/login/", size=5001)

    assert [e.status for e in (small_api, small_still, small_music, small_form)] == [413] * 4
    assert "a still may be 10 KiB at most" in small_still.error()["detail"]


# --- Chunked: cut off as it arrives ---------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "cap"),
    [
        ("/api/v1/devices/register", 64 * KIB),
        ("/api/v1/devices/heartbeat", 64 * KIB),
        ("/api/v1/whip", 64 * KIB),
        ("/api/v1/pose", MIB),
    ],
)
async def test_a_chunked_body_is_cut_off_just_past_the_cap_and_answered_once(
    path: str, cap: int
) -> None:
    # A token (any): the heartbeat fast path refuses a call without one before reading.
    token = [(b"authorization", b"Bearer mmd_not-a-device")]
    exchange = await call(path, size=50 * MIB, declared=None, headers=token)

    assert exchange.status == 413  # exactly one response: the app's own answer is dropped
    assert exchange.error()["error"] == "too_large"
    assert f"over {cap} bytes" in exchange.error()["detail"]
    # Nothing more than the chunk that crossed the cap was read.
    assert exchange.chunks_read == cap // CHUNK + 1


async def test_a_chunked_form_post_past_its_cap_answers_the_short_text() -> None:
    exchange = await call(
        "/accounts/login/",
        size=10 * MIB,
        declared=None,
        content_type=b"application/x-www-form-urlencoded",
    )

    assert exchange.status == 413
    assert exchange.headers["content-type"].startswith("text/plain")
    assert exchange.chunks_read == 2 * MIB // CHUNK + 1


# --- Bad Content-Length -----------------------------------------------------------------------


@pytest.mark.parametrize("declared", [b"abc", b"-1", b"1e3", b"12 34", b"\xd9\xa1"])
@pytest.mark.parametrize(
    "path", ["/api/v1/devices/heartbeat", "/api/v1/devices/register", "/api/v1/stills"]
)
async def test_a_content_length_that_is_not_a_number_is_a_400_in_the_contract_body(
    path: str, declared: bytes
) -> None:
    exchange = await call(path, size=10, declared=declared)

    assert exchange.status == 400
    assert exchange.error()["error"] == "bad_request"
    assert "Content-Length" in exchange.error()["detail"]


async def test_two_content_lengths_that_differ_are_a_400() -> None:
    exchange = await call("/api/v1/devices/register", size=10, headers=[(b"content-length", b"11")])

    assert exchange.status == 400
    assert "one Content-Length" in exchange.error()["detail"]


async def test_the_heartbeat_fast_path_itself_refuses_a_bad_content_length_with_400() -> None:
    # Behind the limits the header never reaches it; called directly (another ASGI stack in
    # front), the fast path must still answer 400 rather than fail.
    from devices.heartbeats import heartbeat_endpoint

    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/api/v1/devices/heartbeat",
        "scheme": "http",
        "headers": [
            (b"host", b"testserver"),
            (b"authorization", b"Bearer mmd_whatever"),
            (b"content-type", b"application/json"),
            (b"content-length", b"two"),
        ],
    }
    await heartbeat_endpoint(scope, receive, send)

    assert messages[0]["status"] == 400
    assert json.loads(messages[1]["body"])["error"] == "bad_request"


# --- Under the cap, nothing changes ---------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("declared", [b"", None], ids=["declared", "chunked"])
async def test_a_body_under_the_cap_reaches_the_endpoint_whole(declared: bytes | None) -> None:
    code = (await database_sync_to_async(pairing_code_get_or_rotate)()).code
    # Padded to several chunks, under the 64 KiB cap.
    body = json.dumps(register_body(code, "install-limits", pad="x" * 50_000)).encode()

    exchange = await call("/api/v1/devices/register", body=body, declared=declared)

    assert exchange.status == 201, exchange.body
    assert exchange.chunks_read == len(body) // CHUNK + 1
    assert await Device.objects.filter(install_id="install-limits").aexists()


@pytest.mark.django_db(transaction=True)
async def test_a_register_call_refused_for_size_counts_no_attempt_and_no_failure() -> None:
    exchange = await call("/api/v1/devices/register", size=MIB, declared=None)

    assert exchange.status == 413
    assert not await RegisterAttempt.objects.aexists()
    assert not await PairingFailure.objects.aexists()


# --- The views' own checks agree --------------------------------------------------------------


@pytest.mark.django_db
def test_a_cue_over_4_kib_is_413_in_the_view_too(operator: Any, operator_client: Client) -> None:
    from director import services as director_services

    session = director_services.session_create(name="Cue", operator=operator)
    response = operator_client.post(
        f"/sessions/{session.pk}/music/cue",
        json.dumps({"pad": "x" * 5000}),
        content_type="application/json",
    )

    assert_error(response, 413, "too_large")
