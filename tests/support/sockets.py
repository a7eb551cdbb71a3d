"""The operator's socket through the real ASGI application, for consumer tests."""

from __future__ import annotations

import asyncio
import uuid

from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.test import Client

from motionmix.asgi import application

REGISTRY_SOCKET = "/ws/director/registry/"
ORIGIN = (b"origin", b"http://localhost")
HOST = (b"host", b"localhost")


def session_cookie(username: str | None = None) -> bytes:
    """A logged-in operator's session cookie (the user is created)."""
    user = get_user_model().objects.create_user(
        username=username or f"op-{uuid.uuid4().hex[:8]}", password="pw-123456789"
    )
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


def session_socket_path(session_id: object) -> str:
    return f"/ws/director/sessions/{session_id}/"


async def connect(
    headers: list[tuple[bytes, bytes]], path: str = REGISTRY_SOCKET
) -> WebsocketCommunicator:
    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    return communicator


async def operator_socket(path: str = REGISTRY_SOCKET) -> WebsocketCommunicator:
    """A connected operator socket; disconnect it in a `finally`."""
    cookie = await sync_to_async(session_cookie)()
    return await connect([ORIGIN, HOST, (b"cookie", cookie)], path)


async def receive_until(communicator: WebsocketCommunicator, needle: str) -> str:
    """Receive pushes until one contains `needle`; fails after 5 s."""
    async with asyncio.timeout(5):
        while True:
            message = await communicator.receive_from(timeout=5)
            if needle in message:
                return message
