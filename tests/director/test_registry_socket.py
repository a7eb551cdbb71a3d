from __future__ import annotations

import asyncio
import contextlib
import re
import time
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from devices import services
from director.consumers import CLOSE_LOGIN_REQUIRED
from director.dom import device_card_id
from motionmix.asgi import application
from tests.support.api import record_beat, register_device
from tests.support.sockets import (
    HOST,
    ORIGIN,
    connect,
    operator_socket,
    receive_until,
    session_cookie,
)

pytestmark = pytest.mark.django_db(transaction=True)


def _register(install_id: str, name: str) -> services.Registration:
    return register_device(install_id, name=name)


async def test_an_anonymous_socket_is_closed_with_the_login_code() -> None:
    communicator = await connect([ORIGIN, HOST])
    output = await communicator.receive_output(timeout=5)
    assert output == {"type": "websocket.close", "code": CLOSE_LOGIN_REQUIRED}
    await communicator.disconnect()


async def test_a_socket_from_a_foreign_origin_is_refused() -> None:
    cookie = await sync_to_async(session_cookie)()
    communicator = WebsocketCommunicator(
        application,
        "/ws/director/registry/",
        headers=[(b"origin", b"http://evil.example"), HOST, (b"cookie", cookie)],
    )
    connected, _ = await communicator.connect(timeout=5)
    assert not connected
    await communicator.disconnect()


async def test_connecting_sends_every_card_and_the_pairing_panel() -> None:
    reg = await sync_to_async(_register)("i-1", "Cam Alpha")
    communicator = await operator_socket()
    try:
        first = await communicator.receive_from(timeout=5)
        assert f'id="{device_card_id(reg.device.pk)}"' in first
        assert 'id="device-cards" class="cards" hx-swap-oob="true"' in first
        assert 'id="pairing-panel"' in first and "Cam Alpha" in first
    finally:
        await communicator.disconnect()


async def test_a_new_device_is_appended_and_a_known_one_replaced() -> None:
    communicator = await operator_socket()
    try:
        await communicator.receive_from(timeout=5)  # the initial state: no devices
        reg = await sync_to_async(_register)("i-2", "Cam Bravo")
        card = device_card_id(reg.device.pk)
        pushed = await receive_until(communicator, card)
        assert 'hx-swap-oob="beforeend:#device-cards"' in pushed
        await sync_to_async(record_beat)(reg.device.pk, battery=0.15, thermal="critical")
        pushed = await receive_until(communicator, "Critical heat")
        assert re.search(rf'id="{card}"[^>]*data-status="online"[^>]*hx-swap-oob="true"', pushed)
        assert "Battery below 20" in pushed
    finally:
        await communicator.disconnect()


async def test_going_offline_is_pushed_to_the_card() -> None:
    reg = await sync_to_async(_register)("i-3", "Cam Charlie")
    communicator = await operator_socket()
    try:
        await communicator.receive_from(timeout=5)
        await sync_to_async(services.device_mark_offline)(device_id=reg.device.pk, reason="test")
        pushed = await receive_until(communicator, 'data-status="offline"')
        assert device_card_id(reg.device.pk) in pushed
        assert "Offline: no heartbeat since" in pushed
    finally:
        await communicator.disconnect()


async def test_a_burst_of_heartbeats_renders_the_card_once_per_window(settings: Any) -> None:
    settings.MOTIONMIX_PUSH_COALESCE_S = 0.3
    reg = await sync_to_async(_register)("i-4", "Cam Delta")
    communicator = await operator_socket()
    card = device_card_id(reg.device.pk)
    try:
        await communicator.receive_from(timeout=5)
        started = time.monotonic()
        for i in range(20):
            await sync_to_async(record_beat)(reg.device.pk, battery=0.9 - i * 0.01)
        burst_s = time.monotonic() - started
        renders = []
        with contextlib.suppress(asyncio.TimeoutError):
            async with asyncio.timeout(1.5):
                while True:
                    message = await communicator.receive_from(timeout=2)
                    if card in message:
                        renders.append(message)
        # One render per coalescing window the burst spanned (plus the one it ends in), not
        # one per beat; the last render shows the last beat.
        windows = int(burst_s / settings.MOTIONMIX_PUSH_COALESCE_S) + 2
        assert 1 <= len(renders) <= min(windows, 19), (len(renders), burst_s)
        assert all(message.count(f'id="{card}"') == 1 for message in renders)
        assert "71%" in renders[-1]
    finally:
        await communicator.disconnect()


async def test_a_rotated_pairing_code_is_pushed() -> None:
    communicator = await operator_socket()
    try:
        await communicator.receive_from(timeout=5)
        code = await sync_to_async(services.pairing_code_rotate)(reason="operator")
        pushed = await receive_until(communicator, 'id="pairing-panel"')
        assert code.display in pushed
    finally:
        await communicator.disconnect()


async def test_the_ledger_chip_is_sent_and_follows_the_outbox(settings: Any) -> None:
    settings.CONVEX_URL = ""
    communicator = await operator_socket()
    try:
        first = await communicator.receive_from(timeout=5)
        assert 'id="ledger-chip"' in first
        await sync_to_async(_register)("i-9", "Cam Juliet")  # records device.registered
        pushed = await receive_until(communicator, 'id="ledger-chip"')
        assert 'data-state="offline"' in pushed
        assert "Convex not configured" in pushed
    finally:
        await communicator.disconnect()


async def test_a_publishing_camera_shows_on_its_card_with_its_live_preview() -> None:
    from channels.layers import get_channel_layer

    from devices.broadcast import FLEET_GROUP
    from director.dom import device_live_id

    reg = await sync_to_async(_register)("i-pub", "Cam Video")
    communicator = await operator_socket()
    try:
        await communicator.receive_from(timeout=5)
        await sync_to_async(services.device_publish_start)(
            device_id=reg.device.pk, publish_id="p1", codec="VP8"
        )
        await sync_to_async(services.device_publish_measure)(
            device_id=reg.device.pk, publish_id="p1", width=640, height=480, fps=30
        )
        card = await receive_until(communicator, "640\u00d7480")
        assert 'data-testid="publishing"' in card and "30 fps" in card and "VP8" in card
        # The card keeps whatever picture the relay pushed last.
        assert re.search(rf'id="{device_live_id(reg.device.pk)}"[^>]*hx-preserve="true"', card)
        await get_channel_layer().group_send(
            FLEET_GROUP,
            {
                "type": "hero.preview",
                "device_id": str(reg.device.pk),
                "image": "data:image/jpeg;base64,AAAA",
                "width": 640,
                "height": 480,
                "fps": 30.0,
                "sent_at": time.time(),
            },
        )
        pushed = await receive_until(communicator, "data:image/jpeg;base64,AAAA")
        assert re.search(rf'id="{device_live_id(reg.device.pk)}"[^>]*hx-swap-oob="true"', pushed)
        assert "hx-preserve" not in pushed
    finally:
        await communicator.disconnect()
