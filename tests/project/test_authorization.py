"""Authorization, project-wide: who sees which session (its pages, stills, music, exports, hero
and socket), what only staff may do, what a device token opens, and that an anonymous caller
reaches nothing but the login, the device register call and the token-guarded device API."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import AsyncClient, Client
from django.urls import URLPattern, URLResolver, get_resolver, resolve
from django.urls.resolvers import RoutePattern

from devices import services as device_services
from devices.models import DeviceCommand, PairingCode
from director import ghost, services
from director.consumers import CLOSE_LOGIN_REQUIRED, CLOSE_NOT_FOUND
from director.export.jobs import session_export_run
from director.export.services import session_export_request
from director.models import MusicTrack, PhotoshootSession, SessionExport
from director.routing import websocket_urlpatterns
from motionmix.asgi import application
from tests.director.stills_support import ingest, jpeg_bytes, meta_for, post_still
from tests.support.api import register_device
from tests.support.sockets import HOST, ORIGIN, session_socket_path

User = get_user_model()
LOGIN_PAGES = ("/accounts/login/", "/admin/login/")

# --- Walking the URLconf ----------------------------------------------------------------------

ROUTE_PARAM = re.compile(r"<(?:(?P<converter>\w+):)?(?P<name>\w+)>")
REGEX_GROUP = re.compile(r"\(\?P<(?P<name>\w+)>(?P<body>[^)]*)\)")


def _random(converter: str) -> str:
    if converter == "uuid":
        return str(uuid.uuid4())
    if converter == "int":
        return "7"
    return f"x{uuid.uuid4().hex[:10]}"


def _sample(pattern: Any, values: dict[str, str]) -> str:
    """A path that `pattern` matches: parameters from `values`, else random ones."""
    text = str(pattern)
    if isinstance(pattern, RoutePattern):
        return ROUTE_PARAM.sub(
            lambda m: values.get(m["name"]) or _random(m["converter"] or "str"), text
        )

    def group(match: re.Match[str]) -> str:
        body = match["body"]
        if re.fullmatch(r"[\w|]+", body):  # an alternation of names: take the first
            return body.split("|")[0]
        return values.get(match["name"]) or _random("str")

    return REGEX_GROUP.sub(group, text).lstrip("^").rstrip("$").replace("\\", "")


def url_patterns(
    values: dict[str, str] | None = None,
    resolver: URLResolver | None = None,
    prefix: str = "/",
) -> Iterator[tuple[str, URLPattern]]:
    """Every URL pattern of the project with a path it matches."""
    resolver = resolver or get_resolver()
    for entry in resolver.url_patterns:
        path = prefix + _sample(entry.pattern, values or {})
        if isinstance(entry, URLResolver):
            yield from url_patterns(values, entry, path)
        else:
            yield path, entry


def _route(pattern: URLPattern) -> str:
    return str(pattern.pattern)


# --- People ------------------------------------------------------------------------------------


def _user(username: str, *, staff: bool = False) -> Any:
    return User.objects.create_user(username=username, password="pw-123456789", is_staff=staff)


def _client(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def alice(db: None) -> Any:
    return _user("alice")


@pytest.fixture
def bob(db: None) -> Any:
    return _user("bob")


@pytest.fixture
def producer(db: None) -> Any:
    return _user("producer", staff=True)


@pytest.fixture
def media(settings: Any, tmp_path: Path) -> Path:
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


def _live_session(operator: Any, name: str, *devices: Any) -> PhotoshootSession:
    session = services.session_create(name=name, operator=operator)
    return services.session_start(session_id=session.pk, device_ids=[d.pk for d in devices])


def _socket_cookie(user: Any) -> bytes:
    return f"sessionid={_client(user).cookies['sessionid'].value}".encode()


async def _close_code(path: str, headers: list[tuple[bytes, bytes]]) -> int | None:
    """Connect; the close code the server sends first, or None when it sends data instead."""
    communicator = WebsocketCommunicator(application, path, headers=headers)
    try:
        connected, _ = await communicator.connect(timeout=5)
        assert connected, path
        output = await communicator.receive_output(timeout=5)
        return output["code"] if output["type"] == "websocket.close" else None
    finally:
        await communicator.disconnect()


# --- Sessions are their operator's; staff see every one ----------------------------------------


def test_an_operator_lists_only_their_sessions_and_staff_list_every_one(
    alice: Any, bob: Any, producer: Any
) -> None:
    services.session_create(name="Alice lookbook", operator=alice)
    services.session_create(name="Bob campaign", operator=bob)

    alice_page = _client(alice).get("/").content.decode()
    assert "Alice lookbook" in alice_page and "Bob campaign" not in alice_page
    staff_page = _client(producer).get("/").content.decode()
    assert "Alice lookbook" in staff_page and "Bob campaign" in staff_page


def _session_scoped(values: dict[str, str]) -> list[tuple[str, URLPattern]]:
    return [
        (path, pattern)
        for path, pattern in url_patterns(values)
        if "<uuid:session_id>" in _route(pattern)
    ]


def _ask(client: Client, path: str, pattern: URLPattern) -> Any:
    """The session call as the page makes it: GET where the view takes one, else its verb."""
    name = pattern.name or ""
    if name == "session_whep_end":
        return client.delete(path)
    if name == "music_cue":
        return client.post(path, "{}", content_type="application/json")
    response = client.get(path)
    if response.status_code == 405:
        response = client.post(path)
    return response


@pytest.mark.django_db
def test_every_call_on_another_operators_session_answers_404_as_an_unknown_one(
    alice: Any, bob: Any, producer: Any, media: Path
) -> None:
    from devices.simulator_operator import click_track

    cam = register_device("auth-cam", name="Cam A").device
    other = register_device("auth-cam-2", name="Cam B").device
    session = _live_session(alice, "Alice lookbook", cam, other)
    proposal = ghost.proposal_create(
        session_id=session.pk,
        kind="switch_hero",
        target_ids=[other.pk],
        payload={},
        rationale="Cam B sees the face.",
        confidence=0.8,
        policy="test",
    )
    owner = _client(alice)
    uploaded = owner.post(
        f"/sessions/{session.pk}/music/upload",
        {"file": SimpleUploadedFile("click.wav", click_track(), "application/octet-stream")},
    )
    assert uploaded.status_code == 201, uploaded.content
    values = {
        "session_id": str(session.pk),
        "proposal_id": str(proposal.pk),
        "track_id": str(MusicTrack.objects.get(session=session).pk),
    }
    calls = _session_scoped(values)
    assert len(calls) >= 15  # every session call is walked: pages, Ghost, music, WHEP, export

    intruder = _client(bob)
    for path, pattern in calls:
        response = _ask(intruder, path, pattern)
        assert response.status_code == 404, (path, response.status_code)
    # Nothing of Alice's session moved.
    session.refresh_from_db()
    proposal.refresh_from_db()
    assert session.status == PhotoshootSession.Status.LIVE
    assert proposal.state == ghost.GhostProposal.State.PENDING

    # Staff and the owner are let through (what each call then says depends on the call).
    for user in (producer, alice):
        client = _client(user)
        for path, pattern in calls:
            if pattern.name == "session_whep_end":
                continue  # no such view exists: 404 for everyone (its owner is tested below)
            response = _ask(client, path, pattern)
            assert response.status_code != 404, (user.username, path, response.content[:200])


def test_another_operators_session_is_neither_listed_nor_opened_by_its_id(
    alice: Any, bob: Any
) -> None:
    session = services.session_create(name="Alice private", operator=alice)
    page = _client(bob).get(f"/sessions/{session.pk}/")
    unknown = _client(bob).get(f"/sessions/{uuid.uuid4()}/")
    assert page.status_code == unknown.status_code == 404
    assert "Alice private" not in page.content.decode()


def _ended_session_with_export(operator: Any) -> SessionExport:
    session = _live_session(operator, "Export take")
    services.session_stop(session_id=session.pk)
    export = session_export_request(session_id=session.pk, requested_by=operator.username)
    finished = session_export_run(export_id=export.pk)
    assert finished is not None and finished.state == SessionExport.State.DONE, finished
    return finished


def test_an_export_downloads_only_for_who_may_see_its_session(
    alice: Any, bob: Any, producer: Any, media: Path
) -> None:
    export = _ended_session_with_export(alice)
    url = f"/exports/{export.pk}/download"
    assert _client(bob).get(url).status_code == 404
    for user in (alice, producer):
        response = _client(user).get(url)
        assert response.status_code == 200, user.username
        assert response["Content-Type"] == "application/zip"
        b"".join(response.streaming_content)  # type: ignore[attr-defined]


def test_a_sessions_stills_open_only_for_who_may_see_it_and_thumbnails_for_the_studio(
    alice: Any, bob: Any, producer: Any, media: Path
) -> None:
    cam = register_device("still-cam", name="Cam S").device
    spare = register_device("spare-cam", name="Cam T").device
    _live_session(alice, "Stills take", cam)
    in_session = ingest(cam, jpeg_bytes(seed=1), captured_at=1.0).still
    outside = ingest(spare, jpeg_bytes(seed=2), captured_at=2.0).still
    assert in_session.session_id is not None and outside.session_id is None

    session_files = ("", "original", "preview.jpg")
    for suffix in session_files:
        url = f"/stills/{in_session.pk}/{suffix}"
        assert _client(bob).get(url).status_code == 404, url
        for user in (alice, producer):
            assert _client(user).get(url).status_code == 200, (user.username, url)
    # The thumbnail shows on every operator's registry (device card, stills strip), as the
    # cameras' live previews do: it is the studio's, like the cameras.
    assert _client(bob).get(f"/stills/{in_session.pk}/thumb.jpg").status_code == 200
    # A still taken outside any session is the studio's: every operator opens it.
    for suffix in (*session_files, "thumb.jpg"):
        assert _client(bob).get(f"/stills/{outside.pk}/{suffix}").status_code == 200, suffix


# --- The hero feed (WHEP) -----------------------------------------------------------------------


def test_whep_answers_an_anonymous_player_401_json_never_a_login_page(alice: Any) -> None:
    session = _live_session(alice, "Hero take")
    anonymous = Client()
    offer = anonymous.post(
        f"/sessions/{session.pk}/whep", "v=0\r\n", content_type="application/sdp"
    )
    end = anonymous.delete(f"/sessions/{session.pk}/whep/{uuid.uuid4().hex}")
    for response in (offer, end):
        assert response.status_code == 401
        assert response["Content-Type"] == "application/json"
        assert response.json()["error"] == "unauthorized"
        assert "Log in" in response.json()["detail"]
    # WHEP has no PATCH here (no trickle ICE): refused as a method, never redirected.
    patch = anonymous.patch(f"/sessions/{session.pk}/whep/{uuid.uuid4().hex}")
    assert patch.status_code == 405


def test_whep_on_another_operators_session_is_404_json_and_reaches_no_relay(
    alice: Any, bob: Any
) -> None:
    from director.hero.runtime import hero_relay_current

    session = _live_session(alice, "Hero take")
    response = _client(bob).post(
        f"/sessions/{session.pk}/whep", "v=0\r\n", content_type="application/sdp"
    )
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
    relay = hero_relay_current()
    assert relay is None or not relay.viewers


@pytest.mark.django_db(transaction=True)
async def test_a_hero_view_is_ended_only_by_the_operator_who_started_it(settings: Any) -> None:
    from director.hero.runtime import hero_relay, hero_relay_close
    from tests.support.webrtc import Sink, offer_watch

    alice, bob, producer = await sync_to_async(
        lambda: (_user("alice"), _user("bob"), _user("producer", staff=True))
    )()
    cam = (await sync_to_async(register_device)("hero-auth", name="Cam H")).device
    session = await sync_to_async(_live_session)(alice, "Hero take", cam)
    clients = {}
    for user in (alice, bob, producer):
        clients[user.username] = AsyncClient()
        await clients[user.username].aforce_login(user)
    relay = hero_relay()
    pc = await offer_watch(Sink())
    try:
        started = await clients["alice"].post(
            f"/sessions/{session.pk}/whep",
            data=pc.localDescription.sdp,
            content_type="application/sdp",
        )
        assert started.status_code == 201, started.content
        location = started["Location"]
        viewer_id = location.rstrip("/").rsplit("/", 1)[-1]
        assert relay.viewers[viewer_id].owner_id == alice.pk
        # Neither another operator nor staff can end it; it is answered as unknown.
        for name in ("bob", "producer"):
            refused = await clients[name].delete(location)
            assert refused.status_code == 404, name
            assert refused.json()["error"] == "not_found"
            assert viewer_id in relay.viewers
        assert (await clients["alice"].delete(location)).status_code == 200
        assert viewer_id not in relay.viewers
    finally:
        await pc.close()
        await hero_relay_close()


# --- What only staff may do --------------------------------------------------------------------


def _toast(response: Any) -> dict[str, str]:
    return json.loads(response["HX-Trigger"])["toast"]


def test_rotating_the_pairing_code_is_for_staff_and_others_get_a_toast(
    bob: Any, producer: Any
) -> None:
    before = device_services.pairing_code_get_or_rotate().code
    refused = _client(bob).post("/registry/pairing/rotate", HTTP_HX_REQUEST="true")
    assert refused.status_code == 403
    toast = _toast(refused)
    assert toast["level"] == "error" and "admin" in toast["message"]
    assert device_services.pairing_code_get_or_rotate().code == before
    assert PairingCode.objects.count() == 1

    rotated = _client(producer).post("/registry/pairing/rotate", HTTP_HX_REQUEST="true")
    assert rotated.status_code == 200
    assert device_services.pairing_code_get_or_rotate().code != before


def test_capture_all_stays_an_operator_action(bob: Any) -> None:
    register_device("capture-auth", name="Cam C")
    response = _client(bob).post("/registry/capture-all", HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert "1 cameras fire together" in _toast(response)["message"]
    assert DeviceCommand.objects.filter(type="capture_still").count() == 1


def test_the_demo_login_is_staff_so_it_sees_the_stand_ins_session_and_may_rotate(
    settings: Any, tmp_path: Path, db: None
) -> None:
    from director.demo import demo_operator_ensure, demo_stand_in_ensure

    settings.VAR_DIR = tmp_path
    demo = User.objects.get(username=demo_operator_ensure().username)
    stand_in = User.objects.get(username=demo_stand_in_ensure().username)
    assert demo.is_staff and not stand_in.is_staff
    session = services.session_create(name="Demo shoot", operator=stand_in)
    client = _client(demo)
    assert "Demo shoot" in client.get("/").content.decode()
    assert client.get(f"/sessions/{session.pk}/").status_code == 200
    assert client.post("/registry/pairing/rotate").status_code == 200


# --- A device token opens no operator page, socket or other device's data ------------------------


def _operator_paths() -> list[tuple[str, URLPattern]]:
    return [
        (path, pattern)
        for path, pattern in url_patterns()
        if not path.startswith(("/api/v1/", "/admin/", "/accounts/"))
    ]


@pytest.mark.django_db
def test_a_device_token_opens_no_operator_page() -> None:
    token = register_device("token-cam", name="Cam D").token
    device = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
    checked = 0
    for path, _pattern in _operator_paths():
        for method in ("get", "post", "delete"):
            response = _call(device, method, path)
            assert _refused_to_anonymous(response), (method, path, response.status_code)
        checked += 1
    assert checked >= 30


@pytest.mark.django_db(transaction=True)
async def test_a_device_token_opens_no_operator_socket() -> None:
    registration = await sync_to_async(register_device)("socket-cam", name="Cam W")
    owner = await sync_to_async(_user)("alice")
    session = await sync_to_async(services.session_create)(name="Take", operator=owner)
    bearer = (b"authorization", f"Bearer {registration.token}".encode())
    for path in ("/ws/director/registry/", session_socket_path(session.pk)):
        assert await _close_code(path, [ORIGIN, HOST, bearer]) == CLOSE_LOGIN_REQUIRED, path


# Transactional: the long poll claims in a thread of its own, which on PostgreSQL opens its own
# connection and so cannot run inside the test's transaction.
@pytest.mark.django_db(transaction=True)
def test_a_device_neither_receives_nor_acknowledges_another_devices_commands(
    device_api: Any,
) -> None:
    a = device_api.register("iso-a", name="Cam A")
    b = device_api.register("iso-b", name="Cam B")
    command = device_services.command_issue(
        device_id=uuid.UUID(b["device_id"]),
        type="set_flip",
        args={"horizontal": True, "vertical": False},
    )
    as_a = {"HTTP_AUTHORIZATION": f"Bearer {a['token']}"}
    polled = device_api.client.get("/api/v1/devices/commands", **as_a)
    assert polled.status_code == 200 and polled.json()["commands"] == []
    ack = device_api.post(
        f"devices/commands/{command.pk}/ack", {"status": "done"}, token=a["token"]
    )
    assert ack.status_code == 404
    assert ack.json()["error"] == "not_found"
    command.refresh_from_db()
    assert command.is_open
    as_b = {"HTTP_AUTHORIZATION": f"Bearer {b['token']}"}
    mine = device_api.client.get("/api/v1/devices/commands", **as_b).json()["commands"]
    assert [c["id"] for c in mine] == [str(command.pk)]


def test_a_device_learns_nothing_of_another_devices_still_by_uploading_its_bytes(
    device_api: Any, media: Path
) -> None:
    a = device_api.register("still-a", name="Cam A")
    b = device_api.register("still-b", name="Cam B")
    data = jpeg_bytes(seed=5)
    first = post_still(device_api.client, a["token"], data, meta_for(data))
    assert first.status_code == 201
    again = post_still(device_api.client, b["token"], data, meta_for(data))
    assert again.json().get("still_id") != first.json()["still_id"]


# --- Anonymous callers: the login, register and the token-guarded device API only ---------------

# Open by design: the login pages, a device's registration (the pairing code guards it), the
# API's own description, and the device API's JSON 404 for calls it does not have. The logout
# pages only log out (nobody, here).
OPEN_PATHS = {
    "/accounts/login/",
    "/accounts/logout/",
    "/admin/login/",
    "/admin/logout/",
    "/api/v1/devices/register",
    "/api/v1/openapi.json",
    "/api/v1/",
}


def _refused_to_anonymous(response: Any) -> bool:
    """Sent to a login page, or a JSON 401, or a verb the call does not take."""
    if response.status_code == 302:
        return response["Location"].startswith(LOGIN_PAGES)
    if response.status_code == 401:
        return response["Content-Type"].startswith("application/json") and (
            response.json()["error"] == "unauthorized"
        )
    return response.status_code == 405


def _call(client: Client, method: str, path: str) -> Any:
    """A well-formed JSON body where one may go, so a refusal is for the caller, not the body."""
    if method == "get":
        return client.get(path)
    return getattr(client, method)(path, "{}", content_type="application/json")


def _is_open(path: str, pattern: URLPattern) -> bool:
    if path in OPEN_PATHS:
        return True
    # The device API's catch-all: a JSON 404 for any other path under /api/v1/.
    return path.startswith("/api/v1/") and _route(pattern) == "^(?P<path>.*)$"


@pytest.mark.django_db
def test_an_anonymous_caller_reaches_nothing_but_the_login_and_the_device_api() -> None:
    anonymous = Client()
    walked = 0
    opened = set()
    for path, pattern in url_patterns():
        resolve(path)  # the sample path really is one of the project's URLs
        walked += 1
        for method in ("get", "post", "put", "patch", "delete"):
            response = _call(anonymous, method, path)
            if _is_open(path, pattern):
                assert response.status_code < 500, (method, path)
                continue
            assert _refused_to_anonymous(response), (method, path, response.status_code)
        if _is_open(path, pattern):
            opened.add(path if path in OPEN_PATHS else "/api/v1/<any other>")
    assert walked >= 100
    assert opened == OPEN_PATHS | {"/api/v1/<any other>"}  # the allow-list holds no dead entry


@pytest.mark.django_db(transaction=True)
async def test_an_anonymous_socket_is_refused_on_every_operator_route() -> None:
    paths = [
        "/" + _sample(pattern.pattern, {})
        for pattern in websocket_urlpatterns
        if str(pattern.pattern)  # the catch-all is for unknown paths, below
    ]
    assert len(paths) >= 2
    for path in paths:
        assert await _close_code(path, [ORIGIN, HOST]) == CLOSE_LOGIN_REQUIRED, path


# --- The operator socket: only sessions one may see; unknown paths close cleanly ----------------


@pytest.mark.django_db(transaction=True)
async def test_a_socket_cannot_subscribe_to_a_session_its_operator_cannot_see() -> None:
    from ledger.broadcast import session_group

    alice, bob, producer = await sync_to_async(
        lambda: (_user("alice"), _user("bob"), _user("producer", staff=True))
    )()
    session = await sync_to_async(services.session_create)(name="Alice take", operator=alice)
    path = session_socket_path(session.pk)
    bob_cookie = await sync_to_async(_socket_cookie)(bob)
    assert await _close_code(path, [ORIGIN, HOST, (b"cookie", bob_cookie)]) == CLOSE_NOT_FOUND
    # Bob's socket joined nothing: a push to the session's group would reach nobody of his.
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    groups = getattr(layer, "groups", None)
    if groups is not None:  # the in-memory layer shows its groups; Redis keeps them server-side
        assert not groups.get(session_group(str(session.pk)))
    for user in (alice, producer):
        cookie = await sync_to_async(_socket_cookie)(user)
        communicator = WebsocketCommunicator(
            application, path, headers=[ORIGIN, HOST, (b"cookie", cookie)]
        )
        try:
            connected, _ = await communicator.connect(timeout=5)
            assert connected
            first = await communicator.receive_from(timeout=5)
            assert 'id="device-cards"' in first, user.username
        finally:
            await communicator.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_an_unknown_socket_path_closes_with_not_found_instead_of_raising() -> None:
    cookie = await sync_to_async(_socket_cookie)(await sync_to_async(_user)("alice"))
    for path in ("/ws/nowhere/", "/ws/director/sessions/not-a-uuid/", "/ws/director/"):
        for headers in ([ORIGIN, HOST], [ORIGIN, HOST, (b"cookie", cookie)]):
            assert await _close_code(path, headers) == CLOSE_NOT_FOUND, path
