"""The heartbeat as the server answers it: through the real ASGI application, where beats
skip Django's request cycle and are committed in batches by one writer thread."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from channels.db import database_sync_to_async

from devices import services
from devices.heartbeats import writers_stop
from devices.models import Device
from ledger.models import ProductionEvent
from motionmix.asgi import application
from tests.support.api import heartbeat_body, register_device

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _stop_writers() -> Iterator[None]:
    yield
    # The writer thread holds a database connection of its own; give it back before the test
    # database is flushed or dropped.
    writers_stop()


URL = "/api/v1/devices/heartbeat"


def _register(install_id: str) -> services.Registration:
    return register_device(install_id)


def _client() -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=application), base_url="http://localhost"
    )


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_beat_is_stored_and_answered_with_the_clocks() -> None:
    reg = await database_sync_to_async(_register)("f-1")
    async with _client() as client:
        response = await client.post(
            URL, json=heartbeat_body(battery=0.33, lens="tele", zoom=3.0), headers=_auth(reg.token)
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"server_time", "received_at", "pending_commands", "clock_offset_s"}
    assert body["server_time"] >= body["received_at"]
    device = await database_sync_to_async(Device.objects.get)(pk=reg.device.pk)
    assert (device.battery, device.lens, device.zoom) == (0.33, "tele", 3.0)


async def test_beats_that_arrive_together_are_answered_each_on_its_own() -> None:
    regs = [await database_sync_to_async(_register)(f"b-{i}") for i in range(3)]
    async with _client() as client:
        answers = await asyncio.gather(
            client.post(URL, json=heartbeat_body(battery=0.5), headers=_auth(regs[0].token)),
            client.post(URL, json=heartbeat_body(lens="periscope"), headers=_auth(regs[1].token)),
            client.post(URL, json=heartbeat_body(battery=0.7), headers=_auth(regs[2].token)),
            client.post(URL, json=heartbeat_body(), headers=_auth("mmd_not-a-token")),
        )
    assert [a.status_code for a in answers] == [200, 400, 200, 401]
    assert "periscope" in answers[1].json()["detail"]
    assert answers[3].json()["error"] == "unauthorized"
    stored = dict(
        await database_sync_to_async(
            lambda: list(Device.objects.values_list("install_id", "battery"))
        )()
    )
    assert stored["b-0"] == 0.5 and stored["b-2"] == 0.7
    assert stored["b-1"] is None  # the refused beat changed nothing


async def test_an_offline_device_comes_back_with_one_ledger_event() -> None:
    reg = await database_sync_to_async(_register)("o-1")
    await database_sync_to_async(services.device_mark_offline)(
        device_id=reg.device.pk, reason="test"
    )
    async with _client() as client:
        await asyncio.gather(
            *[client.post(URL, json=heartbeat_body(), headers=_auth(reg.token)) for _ in range(3)]
        )
    device = await database_sync_to_async(Device.objects.get)(pk=reg.device.pk)
    assert device.status == Device.Status.ONLINE
    events = ProductionEvent.objects.filter(type="device.online", device_id=reg.device.pk)
    assert await database_sync_to_async(events.count)() == 1


@pytest.mark.parametrize(
    ("kwargs", "status", "error"),
    [
        ({"json": heartbeat_body(), "token": False}, 401, "unauthorized"),
        ({"json": heartbeat_body(battery=1.5)}, 400, "invalid"),
        (
            {"content": b"{not json", "headers": {"Content-Type": "application/json"}},
            400,
            "bad_json",
        ),
        ({"content": b"[1, 2]", "headers": {"Content-Type": "application/json"}}, 400, "bad_json"),
        ({"content": b"battery=1", "headers": {"Content-Type": "text/plain"}}, 415, None),
        (
            {
                "content": b"{" + b" " * 70_000 + b"}",
                "headers": {"Content-Type": "application/json"},
            },
            413,
            "too_large",
        ),
    ],
)
async def test_bad_beats_get_the_contract_errors(
    kwargs: dict[str, Any], status: int, error: str | None
) -> None:
    reg = await database_sync_to_async(_register)("e-1")
    token = _auth(reg.token) if kwargs.pop("token", True) else {}
    headers = {**token, **kwargs.pop("headers", {})}
    async with _client() as client:
        response = await client.post(URL, headers=headers, **kwargs)
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error", "detail"}
    if error:
        assert response.json()["error"] == error
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    device = await database_sync_to_async(Device.objects.get)(pk=reg.device.pk)
    assert device.battery is None


async def test_a_wrong_method_and_a_foreign_host_are_refused() -> None:
    async with _client() as client:
        wrong_method = await client.get(URL)
        foreign = await client.post(
            URL, json=heartbeat_body(), headers={"Host": "evil.example", **_auth("x")}
        )
    assert wrong_method.status_code == 405 and wrong_method.headers["Allow"] == "POST"
    assert foreign.status_code == 400 and foreign.json()["error"] == "bad_host"
