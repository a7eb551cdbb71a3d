"""The command calls of Device API v1: the long poll, the ack, and the device WebSocket,
through the real ASGI application."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client
from django.utils import timezone

from devices import services
from devices.consumers import CLOSE_BAD_TOKEN
from devices.models import Device, DeviceCommand
from motionmix.asgi import application
from tests.support.api import heartbeat_body, register_device

pytestmark = pytest.mark.django_db(transaction=True)

HOST = (b"host", b"localhost")
State = DeviceCommand.State


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class DeviceClient:
    """Calls through the whole ASGI application, fast paths included, as a phone's would."""

    def __init__(self, token: str) -> None:
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=application),
            base_url="http://localhost",
            headers=_auth(token),
            timeout=30,
        )

    async def get(self, path: str, params: Any = None) -> httpx.Response:
        return await self.client.get(path, params=params)

    async def post(self, path: str, body: Any) -> httpx.Response:
        return await self.client.post(path, json=body)


async def _register(install_id: str = "iphone-1", **kwargs: Any) -> services.Registration:
    return await sync_to_async(register_device)(install_id, **kwargs)


async def _issue(device_id: Any, type_: str, args: dict[str, Any] | None = None) -> Any:
    return await sync_to_async(services.command_issue)(device_id=device_id, type=type_, args=args)


async def test_the_long_poll_answers_at_once_with_queued_commands() -> None:
    registration = await _register()
    command = await _issue(registration.device.pk, "set_lens", {"zoom": 0.5})
    client = DeviceClient(registration.token)
    response = await client.get("/api/v1/devices/commands", {"wait": 10})
    assert response.status_code == 200
    body = response.json()
    assert [c["id"] for c in body["commands"]] == [str(command.pk)]
    sent = body["commands"][0]
    assert sent["type"] == "set_lens"
    assert sent["args"] == {"zoom": 0.5, "lens": "ultra_wide", "digital_zoom": 1.0}
    assert sent["expires_at"] > sent["issued_at"]
    assert "clock_offset_s" in sent


async def test_the_long_poll_wakes_when_a_command_is_queued() -> None:
    registration = await _register()
    client = DeviceClient(registration.token)
    started = time.monotonic()
    poll = asyncio.create_task(client.get("/api/v1/devices/commands", {"wait": 10}))
    await asyncio.sleep(0.3)
    assert not poll.done()
    command = await _issue(registration.device.pk, "capture_still")
    response = await asyncio.wait_for(poll, timeout=5)
    assert time.monotonic() - started < 5
    assert [c["id"] for c in response.json()["commands"]] == [str(command.pk)]
    state = await sync_to_async(lambda: DeviceCommand.objects.get(pk=command.pk).state)()
    assert state == State.DELIVERED


async def test_the_long_poll_answers_empty_after_the_wait() -> None:
    registration = await _register()
    client = DeviceClient(registration.token)
    started = time.monotonic()
    response = await client.get("/api/v1/devices/commands", {"wait": 0.4})
    assert response.status_code == 200
    assert response.json()["commands"] == []
    assert time.monotonic() - started >= 0.35


@pytest.mark.parametrize("wait", ["26", "-1", "soon"])
async def test_a_wait_out_of_range_is_a_400(wait: str) -> None:
    registration = await _register()
    client = DeviceClient(registration.token)
    response = await client.get("/api/v1/devices/commands", {"wait": wait})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid"
    assert "wait" in response.json()["detail"]


async def test_the_long_poll_needs_a_device_token() -> None:
    response = await DeviceClient("mmd_wrong").get("/api/v1/devices/commands")
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"


def _ack(client: Client, token: str, command_id: Any, body: Any, **extra: Any) -> Any:
    return client.post(
        f"/api/v1/devices/commands/{command_id}/ack",
        data=body if isinstance(body, str) else json.dumps(body),
        content_type=extra.pop("content_type", "application/json"),
        headers=_auth(token),
    )


def test_an_ack_over_http_is_idempotent() -> None:
    registration = register_device("iphone-1")
    command = services.command_issue(device_id=registration.device.pk, type="capture_still")
    services.command_claim(device_id=registration.device.pk, via="poll")
    client = Client()
    body = {"status": "done", "detail": "IMG_0001.JPG", "done_at": time.time()}
    first = _ack(client, registration.token, command.pk, body)
    second = _ack(client, registration.token, command.pk, body)
    assert first.status_code == 200 and first.json() == {
        "id": str(command.pk),
        "state": "done",
        "changed": True,
    }
    assert second.status_code == 200 and second.json()["changed"] is False


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ("{not json", 400, "bad_json"),
        ({"status": "finished"}, 400, "invalid"),
        ({"status": "done", "done_at": "yesterday"}, 400, "invalid"),
    ],
)
def test_a_malformed_ack_is_refused_and_changes_nothing(body: Any, status: int, error: str) -> None:
    registration = register_device("iphone-1")
    command = services.command_issue(device_id=registration.device.pk, type="capture_still")
    response = _ack(Client(), registration.token, command.pk, body)
    assert (response.status_code, response.json()["error"]) == (status, error)
    command.refresh_from_db()
    assert command.state == State.QUEUED


def test_an_ack_with_the_wrong_media_type_is_a_415() -> None:
    registration = register_device("iphone-1")
    command = services.command_issue(device_id=registration.device.pk, type="capture_still")
    response = _ack(
        Client(), registration.token, command.pk, "status=done", content_type="text/plain"
    )
    assert response.status_code == 415


def test_an_ack_for_an_unknown_command_is_a_404_and_for_an_expired_one_a_409() -> None:
    registration = register_device("iphone-1")
    client = Client()
    unknown = _ack(
        client, registration.token, "6a4f7c39-0d36-4bb9-9d4c-6a9b1c1f0a11", {"status": "done"}
    )
    assert unknown.status_code == 404 and unknown.json()["error"] == "not_found"
    command = services.command_issue(device_id=registration.device.pk, type="capture_still")
    DeviceCommand.objects.filter(pk=command.pk).update(expires_at=timezone.now())
    services.commands_expire_due()
    expired = _ack(client, registration.token, command.pk, {"status": "done"})
    assert expired.status_code == 409
    assert "expired" in expired.json()["detail"]


def test_an_ack_with_a_wrong_token_is_a_401() -> None:
    registration = register_device("iphone-1")
    command = services.command_issue(device_id=registration.device.pk, type="capture_still")
    response = _ack(Client(), "mmd_nope", command.pk, {"status": "done"})
    assert response.status_code == 401


# --- The device WebSocket -------------------------------------------------------------------


async def _socket(token: str | None) -> WebsocketCommunicator:
    headers = [HOST]
    if token is not None:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    communicator = WebsocketCommunicator(application, "/ws/v1/device/", headers=headers)
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    return communicator


async def _next(communicator: WebsocketCommunicator, type_: str) -> dict[str, Any]:
    async with asyncio.timeout(5):
        while True:
            message = json.loads(await communicator.receive_from(timeout=5))
            if message["type"] == type_:
                return message


async def test_the_socket_delivers_queued_commands_on_connect_and_new_ones_as_queued() -> None:
    registration = await _register()
    waiting = await _issue(registration.device.pk, "tally", {"state": "live"})
    communicator = await _socket(registration.token)
    try:
        hello = await _next(communicator, "hello")
        assert hello["device_id"] == str(registration.device.pk)
        first = await _next(communicator, "command")
        assert first["command"]["id"] == str(waiting.pk)
        later = await _issue(
            registration.device.pk, "set_flip", {"horizontal": True, "vertical": False}
        )
        pushed = await _next(communicator, "command")
        assert pushed["command"]["id"] == str(later.pk)
        assert pushed["command"]["args"] == {"horizontal": True, "vertical": False}
        via = await sync_to_async(lambda: DeviceCommand.objects.get(pk=later.pk).delivered_via)()
        assert via == "socket"
    finally:
        await communicator.disconnect()


async def test_acks_and_heartbeats_over_the_socket() -> None:
    registration = await _register()
    command = await _issue(registration.device.pk, "set_lens", {"zoom": 0.5})
    communicator = await _socket(registration.token)
    try:
        await _next(communicator, "command")
        ack = {"type": "ack", "id": str(command.pk), "status": "done", "done_at": time.time()}
        await communicator.send_to(text_data=json.dumps(ack))
        assert (await _next(communicator, "ack.ok"))["changed"] is True
        await communicator.send_to(text_data=json.dumps(ack))
        assert (await _next(communicator, "ack.ok"))["changed"] is False
        beat = {"type": "heartbeat", **heartbeat_body(lens="ultra_wide", zoom=0.5)}
        await communicator.send_to(text_data=json.dumps(beat))
        answer = await _next(communicator, "heartbeat.ok")
        assert answer["pending_commands"] == 0
        assert answer["received_at"] <= answer["server_time"]
        device = await sync_to_async(Device.objects.get)(pk=registration.device.pk)
        assert (device.lens, device.zoom) == ("ultra_wide", 0.5)
    finally:
        await communicator.disconnect()


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ("not json", "bad_json"),
        ("[1, 2]", "bad_json"),
        ('{"type": "dance"}', "invalid"),
        ('{"type": "ack", "id": "nope", "status": "done"}', "invalid"),
        (
            '{"type": "ack", "id": "6a4f7c39-0d36-4bb9-9d4c-6a9b1c1f0a11", "status": "done"}',
            "not_found",
        ),
        ('{"type": "heartbeat", "battery": 2}', "invalid"),
    ],
)
async def test_a_bad_socket_message_gets_an_error_and_the_socket_stays_open(
    message: str, error: str
) -> None:
    registration = await _register()
    communicator = await _socket(registration.token)
    try:
        await _next(communicator, "hello")
        await communicator.send_to(text_data=message)
        assert (await _next(communicator, "error"))["error"] == error
        command = await _issue(registration.device.pk, "capture_still")
        assert (await _next(communicator, "command"))["command"]["id"] == str(command.pk)
    finally:
        await communicator.disconnect()


@pytest.mark.parametrize("token", [None, "mmd_wrong"])
async def test_a_socket_without_a_valid_token_is_closed_with_4401(token: str | None) -> None:
    communicator = await _socket(token)
    error = json.loads(await communicator.receive_from(timeout=5))
    assert error["error"] == "unauthorized"
    assert await communicator.receive_output(timeout=5) == {
        "type": "websocket.close",
        "code": CLOSE_BAD_TOKEN,
    }
    await communicator.disconnect()


async def test_a_socket_and_a_long_poll_never_both_get_a_command() -> None:
    registration = await _register()
    communicator = await _socket(registration.token)
    client = DeviceClient(registration.token)
    try:
        await _next(communicator, "hello")
        poll = asyncio.create_task(client.get("/api/v1/devices/commands", {"wait": 2}))
        await asyncio.sleep(0.2)
        commands = [await _issue(registration.device.pk, "capture_still") for _ in range(5)]
        polled = [c["id"] for c in (await asyncio.wait_for(poll, 5)).json()["commands"]]
        pushed: list[str] = []
        async with asyncio.timeout(5):
            while len(pushed) + len(polled) < len(commands):
                pushed.append((await _next(communicator, "command"))["command"]["id"])
        assert sorted(pushed + polled) == sorted(str(c.pk) for c in commands)
        assert not set(pushed) & set(polled)
    finally:
        await communicator.disconnect()


async def test_the_heartbeat_answer_carries_the_clock_offset_from_round_trips() -> None:
    registration = await _register()
    client = DeviceClient(registration.token)
    skew = 0.250  # this device's clock runs 250 ms ahead
    t0 = time.time() + skew
    first = await client.post("/api/v1/devices/heartbeat", heartbeat_body(sent_at=t0))
    answer = first.json()
    t3 = time.time() + skew
    second = await client.post(
        "/api/v1/devices/heartbeat",
        heartbeat_body(
            sent_at=time.time() + skew,
            clock={
                "sent_at": t0,
                "received_at": answer["received_at"],
                "server_time": answer["server_time"],
                "returned_at": t3,
            },
        ),
    )
    assert second.status_code == 200
    assert second.json()["clock_offset_s"] == pytest.approx(skew, abs=0.02)
