"""Cross-site protection: every operator POST (and DELETE) needs the CSRF token, and operator
sockets accept only pages of this host (the Origin check)."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.test import Client

from director import ghost, services
from director.routing import websocket_urlpatterns
from motionmix.asgi import application
from tests.project.test_authorization import _sample, url_patterns
from tests.support.api import register_device
from tests.support.sockets import HOST, ORIGIN

User = get_user_model()
UNSAFE = ("post", "delete")


def _csrf_refused(response: Any) -> bool:
    """Django's CSRF failure: a 403 that says so (not a refusal of the view's own)."""
    return response.status_code == 403 and b"CSRF verification failed" in response.content


def _operator_calls(user: Any) -> list[str]:
    """Every operator URL outside the device API (token, no cookies) and the admin (Django's
    own), with real ids of `user`'s session, camera and Ghost proposal."""
    cam = register_device("csrf-cam", name="Cam X").device
    other = register_device("csrf-cam-2", name="Cam Y").device
    draft = services.session_create(name="CSRF take", operator=user)
    session = services.session_start(session_id=draft.pk, device_ids=[cam.pk, other.pk])
    proposal = ghost.proposal_create(
        session_id=session.pk,
        kind="switch_hero",
        target_ids=[other.pk],
        payload={},
        rationale="Cam Y sees the face.",
        confidence=0.8,
        policy="test",
    )
    values = {
        "session_id": str(session.pk),
        "device_id": str(cam.pk),
        "proposal_id": str(proposal.pk),
    }
    return [
        path
        for path, _pattern in url_patterns(values)
        if not path.startswith(("/api/v1/", "/admin/"))
    ]


def _logged_in(user: Any) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


@pytest.mark.django_db
def test_every_operator_post_and_delete_without_the_csrf_token_is_refused(
    settings: Any, tmp_path: Any
) -> None:
    settings.MEDIA_ROOT = tmp_path / "media"
    user = User.objects.create_user(username="producer", password="pw-123456789", is_staff=True)
    paths = _operator_calls(user)
    assert len(paths) >= 35
    client = _logged_in(user)
    for path in paths:
        response = client.post(path)
        assert _csrf_refused(response), (path, response.status_code)
        # A DELETE is checked too; the one view that checks its token itself (the music upload,
        # csrf_exempt so its upload handler is set first) takes only POST.
        response = client.delete(path)
        assert _csrf_refused(response) or response.status_code == 405, (path, response)

    # The same calls with the token pass the check (so the refusals above were the check's):
    # each answers as its view does. A fresh client each time, as logging out is among them.
    for path in paths:
        for method in UNSAFE:
            client = _logged_in(user)
            client.get("/")  # the page sets the CSRF cookie, as the Live Director's pages do
            token = client.cookies["csrftoken"].value
            response = getattr(client, method)(path, HTTP_X_CSRFTOKEN=token)
            assert not _csrf_refused(response), (method, path)


# --- The Origin check on operator sockets --------------------------------------------------------


def _socket_paths(session_id: object) -> list[str]:
    """Every operator socket route (the catch-all as an unknown path)."""
    return [
        "/" + (_sample(p.pattern, {"session_id": str(session_id)}) or "ws/nowhere/")
        for p in websocket_urlpatterns
    ]


async def _connects(path: str, headers: list[tuple[bytes, bytes]]) -> bool:
    communicator = WebsocketCommunicator(application, path, headers=headers)
    try:
        connected, _ = await communicator.connect(timeout=5)
        return connected
    finally:
        await communicator.disconnect()


def _cookie(user: Any) -> bytes:
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


@pytest.mark.django_db(transaction=True)
async def test_an_operator_socket_from_a_foreign_origin_is_refused_and_from_the_host_accepted() -> (
    None
):
    user = await sync_to_async(User.objects.create_user)(username="op", password="pw-123456789")
    session = await sync_to_async(services.session_create)(name="Take", operator=user)
    cookie = (b"cookie", await sync_to_async(_cookie)(user))
    paths = _socket_paths(session.pk)
    assert len(paths) >= 3
    for path in paths:
        for origin in (b"http://evil.example", b"http://localhost.evil.example", b"null"):
            assert not await _connects(path, [(b"origin", origin), HOST, cookie]), (path, origin)
        # A browser always sends an Origin; a request without one is no page of ours.
        assert not await _connects(path, [HOST, cookie]), path

    # From the host's own page the same sockets open, and the session's sends its state.
    for path in paths:
        assert await _connects(path, [ORIGIN, HOST, cookie]), path
    communicator = WebsocketCommunicator(application, paths[1], headers=[ORIGIN, HOST, cookie])
    try:
        connected, _ = await communicator.connect(timeout=5)
        assert connected
        assert 'id="device-cards"' in await communicator.receive_from(timeout=5)
    finally:
        await communicator.disconnect()
