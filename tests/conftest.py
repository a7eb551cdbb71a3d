from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from channels.layers import channel_layers
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connections
from django.test import Client

from tests.support.api import heartbeat_body, register_body
from tests.support.server import RunningServer, running_server


@pytest.fixture(autouse=True, scope="session")
def _isolated_channel_layer() -> None:
    # On Redis, keep this run's groups apart from any other run's.
    if settings.REDIS_URL:
        layer = settings.CHANNEL_LAYERS["default"]
        layer["CONFIG"]["prefix"] = f"mmtest-{uuid.uuid4().hex[:8]}"
        channel_layers.backends.clear()


@pytest.fixture(autouse=True, scope="session")
def _close_connection_pools(django_db_setup: None, django_db_blocker: Any) -> Iterator[None]:
    # Threads of our own (the heartbeat writer) hand their connections back to the PostgreSQL
    # pool, which keeps them open; close it before the test database is dropped.
    yield
    with django_db_blocker.unblock():
        for conn in connections.all():
            close_pool = getattr(conn, "close_pool", None)
            if close_pool is not None:
                close_pool()


@pytest.fixture(autouse=True)
def _no_convex_outage_left_over() -> Iterator[None]:
    # The Convex backoff and the flush lock live in the cache, which outlives a test.
    from django.core.cache import cache

    from ledger.sync import FLUSH_LOCK_KEY, OUTAGE_KEY

    cache.delete_many([OUTAGE_KEY, FLUSH_LOCK_KEY])
    yield
    cache.delete_many([OUTAGE_KEY, FLUSH_LOCK_KEY])


@pytest.fixture(autouse=True)
def _no_server_loop_left_on_this_thread() -> Iterator[None]:
    """A test that drives async code from this thread (`async_to_sync` around the ASGI app or
    a consumer) leaves asgiref's record of that loop on the thread, closed, once it is done.
    `ledger.pushes.send_soon` reads such a record as a server shutting down and drops its
    pushes; a test is a fresh process's thread, so the record goes with the test."""
    yield
    from asgiref.sync import SyncToAsync

    loop = getattr(SyncToAsync.threadlocal, "main_event_loop", None)
    if loop is not None and not loop.is_running():
        del SyncToAsync.threadlocal.main_event_loop


@pytest.fixture(autouse=True, scope="session")
def _fast_password_hashing() -> None:
    """In-process tests hash operators' passwords with a cheap hasher: PBKDF2's deliberate
    cost (about 0.3 s a password) is not under test here and would dominate the suite. The
    servers the journeys start keep Django's default hashers."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def operator(db: None) -> Any:
    return get_user_model().objects.create_user(username="op", password="op-password-123")


@pytest.fixture
def operator_client(operator: Any) -> Client:
    client = Client()
    client.force_login(operator)
    return client


@pytest.fixture
def pairing_code(db: None) -> str:
    from devices.services import pairing_code_get_or_rotate

    return pairing_code_get_or_rotate().code


class DeviceApi:
    """The device side of the HTTP contract, through Django's test client."""

    def __init__(self, client: Client, code: str) -> None:
        self.client = client
        self.code = code

    def post(self, path: str, body: Any, token: str | None = None, **extra: Any) -> Any:
        headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
        return self.client.post(
            f"/api/v1/{path}", body, content_type="application/json", **headers, **extra
        )

    def register(self, install_id: str = "install-1", **overrides: Any) -> dict[str, Any]:
        response = self.post("devices/register", register_body(self.code, install_id, **overrides))
        assert response.status_code in (200, 201), response.content
        return response.json()

    def heartbeat(self, token: str, **overrides: Any) -> Any:
        return self.post("devices/heartbeat", heartbeat_body(**overrides), token=token)


@pytest.fixture
def device_api(db: None, pairing_code: str) -> DeviceApi:
    return DeviceApi(Client(), pairing_code)


@pytest.fixture
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A real server in its own processes with its own database, for one test."""
    workdir: Path = tmp_path_factory.mktemp("server")
    with running_server(workdir) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Debian Chromium (tests/support/browser.py), shared by a module's journeys."""
    from tests.support.browser import chromium

    with chromium() as launched:
        yield launched
