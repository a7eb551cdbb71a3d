"""The hero relay with real aiortc peers over loopback: WHIP publishers, the relay in this
process (its async views run on the test's loop), WHEP viewers reading the frame codes drawn
into the pixels. Channel layer and database are the suite's (in-memory and SQLite, or Redis
and PostgreSQL)."""

from __future__ import annotations

import asyncio
import base64
import io
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import AsyncClient
from PIL import Image

from devices.broadcast import FLEET_GROUP
from devices.ice import ice_host_addresses_apply
from devices.models import Device
from director import services
from director.hero.relay import HeroRelay
from director.hero.runtime import hero_relay, hero_relay_close
from director.models import PhotoshootSession
from ledger.models import ProductionEvent
from tests.support.api import register_device
from tests.support.webrtc import (
    CodedTrack,
    Sink,
    answer,
    eventually,
    offer_publish,
    offer_watch,
    unlocked,
    wait_state,
)

pytestmark = pytest.mark.django_db(transaction=True)

WHIP = "/api/v1/whip"
SDP = "application/sdp"


@dataclass
class Shoot:
    session_id: UUID
    devices: list[UUID]
    tokens: list[str]
    operator: Any
    client: AsyncClient | None = None  # the operator's browser, logged in


def _shoot(count: int = 2) -> Shoot:
    regs = [register_device(f"hero-{i}", name=f"Cam {i}") for i in range(1, count + 1)]
    operator = get_user_model().objects.create_user("director", password="x")
    session = services.session_create(name="Hero test", operator=operator)
    services.session_start(session_id=session.pk, device_ids=[r.device.pk for r in regs])
    return Shoot(
        session_id=session.pk,
        devices=[r.device.pk for r in regs],
        tokens=[r.token for r in regs],
        operator=operator,
    )


@pytest.fixture(autouse=True)
def _postgresql_only() -> None:
    if connection.vendor != "postgresql":
        # The relay writes from a thread of its own while the test reads; SQLite's in-memory
        # test database locks whole tables between threads instead of waiting, and its
        # teardown flush then fails. The embedded mode's relay (a real server on a SQLite
        # file) is covered by test_hero_browser.py and the simulator's video tests.
        pytest.skip(
            "needs PostgreSQL: SQLite's in-memory test database locks whole tables between "
            "threads, so the relay's writes and the test's reads cannot overlap; runs in the "
            "scaled pass"
        )


@pytest.fixture
async def relay(settings: Any) -> AsyncIterator[HeroRelay]:
    settings.MOTIONMIX_HERO_NO_MEDIA_S = 1.5
    settings.MOTIONMIX_HERO_CONNECT_S = 6.0
    settings.MOTIONMIX_HERO_PREVIEW_S = 0.3
    # Both peers on this machine: offer loopback, which aioice leaves out by default.
    ice_host_addresses_apply(["127.0.0.1"])
    relay = hero_relay()
    try:
        yield relay
    finally:
        await hero_relay_close()
        ice_host_addresses_apply([])


@pytest.fixture
async def shoot() -> Shoot:
    shoot = await sync_to_async(_shoot)()
    # Logged in before any peer exists: on the SQLite test database a write that meets the
    # relay's writes fails at once (shared-cache table locks), which a server never sees.
    shoot.client = AsyncClient()
    await shoot.client.aforce_login(shoot.operator)
    return shoot


async def _publish(token: str, track: CodedTrack, *, codec: str = "") -> tuple[Any, str]:
    pc = await offer_publish(track, codec=codec)
    response = await AsyncClient().post(
        WHIP,
        data=pc.localDescription.sdp,
        content_type=SDP,
        headers={"authorization": f"Bearer {token}"},
    )
    assert response.status_code == 201, response.content
    assert response["Content-Type"] == SDP
    await answer(pc, response.content.decode())
    return pc, response["Location"]


async def _watch(shoot: Shoot, *, codec: str = "") -> tuple[Any, Sink, str]:
    sink = Sink()
    pc = await offer_watch(sink, codec=codec)
    assert shoot.client is not None
    response = await shoot.client.post(
        f"/sessions/{shoot.session_id}/whep", data=pc.localDescription.sdp, content_type=SDP
    )
    assert response.status_code == 201, response.content
    await answer(pc, response.content.decode())
    return pc, sink, response["Location"]


async def _events(type: str) -> list[ProductionEvent]:
    return await unlocked(
        lambda: sync_to_async(list)(ProductionEvent.objects.filter(type=type).order_by("seq"))
    )


async def _close(*pcs: Any) -> None:
    for pc in pcs:
        await pc.close()


async def test_a_publish_is_answered_and_the_card_shows_its_size_and_rate(
    relay: HeroRelay, shoot: Shoot
) -> None:
    pc, location = await _publish(shoot.tokens[0], CodedTrack(1))
    try:
        assert location.startswith(f"{WHIP}/")
        await wait_state(pc, {"connected"})
        device = await eventually(
            lambda: Device.objects.filter(pk=shoot.devices[0], publish_width=320).afirst()
        )
        assert device.is_publishing and device.publish_codec == "VP8"
        assert (device.publish_width, device.publish_height) == (320, 240)
        started = await _events("device.publish_started")
        assert started[0].payload["codec"] == "VP8"
        assert started[0].stream == str(shoot.session_id)
    finally:
        await _close(pc)


@pytest.mark.parametrize("codec", ["vp8", "h264"])
async def test_frames_reach_a_viewer_at_the_publishers_rate(
    relay: HeroRelay, shoot: Shoot, codec: str
) -> None:
    publisher, _ = await _publish(shoot.tokens[0], CodedTrack(1, fps=30), codec=codec)
    viewer, sink, _ = await _watch(shoot, codec=codec)
    try:
        await sink.wait_for(lambda s: len(s.frames) >= 5, what="the first frames")
        begin = time.monotonic()
        await asyncio.sleep(2.0)
        received = [code for at, code in sink.frames if at >= begin]
        fps = len(received) / 2.0
        assert fps >= 24, f"{fps:.1f} fps at the viewer for 30 sent"
        assert {code.source for code in received if code} == {1}
        # Almost every frame survives the two encodes with its code readable.
        assert sum(code is not None for code in received) >= 0.9 * len(received)
        assert relay.viewers[next(iter(relay.viewers))].codec == codec.upper()
    finally:
        sink.stop()
        await _close(viewer, publisher)


async def test_a_switch_shows_the_other_camera_without_renegotiation(
    relay: HeroRelay, shoot: Shoot
) -> None:
    one, _ = await _publish(shoot.tokens[0], CodedTrack(1))
    two, _ = await _publish(shoot.tokens[1], CodedTrack(2))
    viewer, sink, _ = await _watch(shoot)
    try:
        await sink.wait_for(lambda s: 1 in s.sources(), what="Cam 1 on air")
        remote = viewer.remoteDescription.sdp
        await sync_to_async(services.session_hero_switch)(
            session_id=shoot.session_id, device_id=shoot.devices[1], switched_by="director"
        )
        switched_at = time.monotonic()
        await sink.wait_for(
            lambda s: 2 in s.sources(since=switched_at), timeout=5, what="Cam 2 on air"
        )
        first_two = next(at for at, c in sink.frames if c and c.source == 2)
        assert first_two - switched_at < 1.0
        # No gap: frames kept coming across the switch, and none of Cam 1 came after Cam 2.
        after = [s for s in sink.sources(since=first_two) if s is not None]
        assert set(after) == {2}
        # One connection throughout: no new offer, no new answer.
        assert viewer.remoteDescription.sdp == remote and viewer.signalingState == "stable"
        assert viewer.connectionState == "connected"
        on_air = await eventually(lambda: _events("hero.on_air"))
        switched = (await _events("hero.switched"))[-1]
        assert on_air[-1].payload["cause"] == str(switched.event_id)
        assert on_air[-1].payload["to"] == str(shoot.devices[1])
        assert 0 <= on_air[-1].payload["after_ms"] < 1000
    finally:
        sink.stop()
        await _close(viewer, one, two)


async def test_several_operators_watch_at_once_each_with_an_intact_picture(
    relay: HeroRelay, shoot: Shoot
) -> None:
    # H.264, three viewers: three encoders in three threads, each with its own frames.
    publisher, _ = await _publish(shoot.tokens[0], CodedTrack(1), codec="h264")
    viewers = [await _watch(shoot, codec="h264") for _ in range(3)]
    try:
        for _, sink, _ in viewers:
            await sink.wait_for(lambda s: len(s.frames) >= 45, what="frames at each viewer")
        assert len(relay.viewers) == 3
        for _, sink, _ in viewers:
            readable = [code for _, code in sink.frames[5:] if code is not None]
            assert len(readable) >= 0.9 * len(sink.frames[5:]), "damaged pictures"
            assert {code.source for code in readable} == {1}
    finally:
        for pc, sink, _ in viewers:
            sink.stop()
            await pc.close()
        await _close(publisher)


async def test_a_second_publish_from_the_same_device_replaces_the_first(
    relay: HeroRelay, shoot: Shoot
) -> None:
    old, old_location = await _publish(shoot.tokens[0], CodedTrack(1))
    new, new_location = await _publish(shoot.tokens[0], CodedTrack(1))
    try:
        assert old_location != new_location
        stopped = await eventually(lambda: _events("device.publish_stopped"))
        assert stopped[0].payload["reason"] == "replaced"
        assert old_location.endswith(stopped[0].payload["publish_id"])
        assert len(relay.publishers) == 1
        device = await unlocked(lambda: Device.objects.aget(pk=shoot.devices[0]))
        assert new_location.endswith(device.publish_id)
        assert next(iter(relay.publishers.values())).pc.connectionState != "closed"
    finally:
        await _close(old, new)


async def test_delete_on_the_location_ends_the_publish(relay: HeroRelay, shoot: Shoot) -> None:
    pc, location = await _publish(shoot.tokens[0], CodedTrack(1))
    auth = {"authorization": f"Bearer {shoot.tokens[0]}"}
    try:
        await wait_state(pc, {"connected"})
        assert (await AsyncClient().delete(location, headers=auth)).status_code == 200
        device = await unlocked(lambda: Device.objects.aget(pk=shoot.devices[0]))
        assert not device.is_publishing
        stopped = await _events("device.publish_stopped")
        assert stopped[0].payload["reason"] == "unpublished"
        again = await AsyncClient().delete(location, headers=auth)
        assert again.status_code == 404
        patch = await AsyncClient().patch(location, headers=auth)
        assert patch.status_code == 405
    finally:
        await _close(pc)


async def test_someone_elses_publish_cannot_be_ended(relay: HeroRelay, shoot: Shoot) -> None:
    pc, location = await _publish(shoot.tokens[0], CodedTrack(1))
    try:
        other = {"authorization": f"Bearer {shoot.tokens[1]}"}
        assert (await AsyncClient().delete(location, headers=other)).status_code == 404
        assert len(relay.publishers) == 1
    finally:
        await _close(pc)


async def test_a_publisher_that_goes_silent_is_cleaned_up(relay: HeroRelay, shoot: Shoot) -> None:
    track = CodedTrack(1)
    pc, _ = await _publish(shoot.tokens[0], track)
    try:
        await wait_state(pc, {"connected"})
        await eventually(lambda: Device.objects.filter(publish_width=320).aexists())
        track.paused = True  # the connection stays up; no frame arrives
        stopped = await eventually(lambda: _events("device.publish_stopped"), timeout=8)
        assert stopped[0].payload["reason"] == "no_media"
        assert stopped[0].payload["frames"] > 0
        assert not relay.publishers
    finally:
        await _close(pc)


async def test_a_publisher_that_vanishes_is_cleaned_up(relay: HeroRelay, shoot: Shoot) -> None:
    pc, _ = await _publish(shoot.tokens[0], CodedTrack(1))
    await wait_state(pc, {"connected"})
    await pc.close()  # gone without a DELETE
    stopped = await eventually(lambda: _events("device.publish_stopped"), timeout=8)
    assert stopped[0].payload["reason"] in {"ice_failed", "no_media"}
    assert not (await unlocked(lambda: Device.objects.aget(pk=shoot.devices[0]))).is_publishing


async def test_the_cards_get_a_small_preview_about_every_second(
    relay: HeroRelay, shoot: Shoot
) -> None:
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(FLEET_GROUP, channel)
    pc, _ = await _publish(shoot.tokens[0], CodedTrack(1, size=(640, 480)))
    try:
        deadline = time.monotonic() + 10
        while True:
            message = await asyncio.wait_for(layer.receive(channel), timeout=10)
            if message["type"] == "hero.preview":
                break
            assert time.monotonic() < deadline
        assert message["device_id"] == str(shoot.devices[0])
        assert (message["width"], message["height"]) == (640, 480)
        head, data = message["image"].split(",", 1)
        assert head == "data:image/jpeg;base64"
        image = Image.open(io.BytesIO(base64.b64decode(data)))
        assert image.format == "JPEG" and image.size == (320, 240)
    finally:
        await layer.group_discard(FLEET_GROUP, channel)
        await _close(pc)


async def test_shutting_the_relay_down_closes_every_peer(relay: HeroRelay, shoot: Shoot) -> None:
    publisher, _ = await _publish(shoot.tokens[0], CodedTrack(1))
    viewer, sink, _ = await _watch(shoot)
    try:
        await sink.wait_for(lambda s: len(s.frames) >= 3, what="frames")
        await relay.close()
        assert not relay.publishers and not relay.viewers and not relay.outputs
        stopped = await _events("device.publish_stopped")
        assert [e.payload["reason"] for e in stopped] == ["shutdown"]
        await wait_state(publisher, {"closed", "failed"}, timeout=15)
    finally:
        sink.stop()
        await _close(viewer, publisher)


async def test_stopping_the_session_ends_its_viewers(relay: HeroRelay, shoot: Shoot) -> None:
    publisher, _ = await _publish(shoot.tokens[0], CodedTrack(1))
    viewer, sink, _ = await _watch(shoot)
    try:
        await sink.wait_for(lambda s: len(s.frames) >= 3, what="frames")
        await sync_to_async(services.session_stop)(session_id=shoot.session_id)
        await eventually(lambda: _async(not relay.viewers and not relay.outputs))
        await wait_state(viewer, {"closed", "failed"}, timeout=15)
    finally:
        sink.stop()
        await _close(viewer, publisher)


async def _async(value: Any) -> Any:
    return value


# --- refusals ---------------------------------------------------------------------------


async def test_bad_offers_are_refused_with_a_reason(relay: HeroRelay, shoot: Shoot) -> None:
    auth = {"authorization": f"Bearer {shoot.tokens[0]}"}
    audio_only = (
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
    )
    cases = {
        "": "empty",
        "hello": "must start with v=0",
        audio_only: "no video",
        "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=sendonly\r\na=rtpmap:96 AV1/90000\r\n": (
            "neither VP8 nor H.264"
        ),
        "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=recvonly\r\na=rtpmap:96 VP8/90000\r\n": (
            "must send video"
        ),
        "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=sendonly\r\na=rtpmap:96 VP8/90000\r\n": (
            "could not be answered"
        ),
    }
    for body, reason in cases.items():
        response = await AsyncClient().post(WHIP, data=body, content_type=SDP, headers=auth)
        assert response.status_code == 400, (body, response.content)
        assert reason in response.json()["detail"], response.json()
    wrong_type = await AsyncClient().post(
        WHIP, data="v=0", content_type="application/json", headers=auth
    )
    assert wrong_type.status_code == 415
    assert not relay.publishers
    assert not await unlocked(
        lambda: Device.objects.filter(publishing_since__isnull=False).aexists()
    )


async def test_an_offer_too_large_is_refused_with_413_in_the_contracts_body(
    relay: HeroRelay, shoot: Shoot
) -> None:
    auth = {"authorization": f"Bearer {shoot.tokens[0]}"}
    operator = AsyncClient()
    await operator.aforce_login(shoot.operator)
    whep = f"/sessions/{shoot.session_id}/whep"
    # Just over an offer's limit (64 KB), and past what Django reads at all (2 MiB).
    for size in (64 * 1024 + 1, 3 * 1024 * 1024):
        body = "v=0\r\n" + "a=x\r\n" * (size // 5)
        published = await AsyncClient().post(WHIP, data=body, content_type=SDP, headers=auth)
        watched = await operator.post(whep, data=body, content_type=SDP)
        for response in (published, watched):
            assert response.status_code == 413, (size, response.content[:200])
            assert response["Content-Type"].startswith("application/json")
            assert response.json()["error"] == "too_large"
            assert "an SDP offer is at most 64 KB" in response.json()["detail"]
    assert not relay.publishers and not relay.viewers


async def test_a_wrong_token_is_refused(relay: HeroRelay, shoot: Shoot) -> None:
    pc = await offer_publish(CodedTrack(1))
    try:
        for headers in ({"authorization": "Bearer mmx_wrong"}, {}):
            response = await AsyncClient().post(
                WHIP, data=pc.localDescription.sdp, content_type=SDP, headers=headers
            )
            assert response.status_code == 401
        assert not relay.publishers
    finally:
        await pc.close()


async def test_watching_needs_a_login_a_known_session_and_a_live_one(
    relay: HeroRelay, shoot: Shoot
) -> None:
    sink = Sink()
    pc = await offer_watch(sink)
    offer = pc.localDescription.sdp
    try:
        anonymous = await AsyncClient().post(
            f"/sessions/{shoot.session_id}/whep", data=offer, content_type=SDP
        )
        assert anonymous.status_code == 401
        client = AsyncClient()
        await client.aforce_login(shoot.operator)
        missing = await client.post(
            "/sessions/00000000-0000-0000-0000-000000000000/whep", data=offer, content_type=SDP
        )
        assert missing.status_code == 404
        draft = await sync_to_async(services.session_create)(name="Later", operator=shoot.operator)
        not_live = await client.post(f"/sessions/{draft.pk}/whep", data=offer, content_type=SDP)
        assert not_live.status_code == 409
        assert "not live" in not_live.json()["detail"]
        sender = await offer_publish(CodedTrack(1))
        publish_offer = await client.post(
            f"/sessions/{shoot.session_id}/whep",
            data=sender.localDescription.sdp,
            content_type=SDP,
        )
        await sender.close()
        assert publish_offer.status_code == 400
        assert "must receive video" in publish_offer.json()["detail"]
        assert not relay.viewers
        assert await PhotoshootSession.objects.filter(status="live").acount() == 1
    finally:
        await pc.close()


async def test_after_a_channel_layer_outage_the_outputs_follow_the_database(
    relay: HeroRelay, shoot: Shoot
) -> None:
    publisher_one, _ = await _publish(shoot.tokens[0], CodedTrack(1))
    publisher_two, _ = await _publish(shoot.tokens[1], CodedTrack(2))
    viewer, sink, _ = await _watch(shoot)
    try:
        await sink.wait_for(lambda s: 1 in s.sources(), what="Cam 1 on air")
        # A switch whose message never reached the relay (the layer was down).
        await unlocked(
            lambda: PhotoshootSession.objects.filter(pk=shoot.session_id).aupdate(
                hero_id=shoot.devices[1]
            )
        )
        await relay.resync()
        since = time.monotonic()
        await sink.wait_for(lambda s: 2 in s.sources(since=since), timeout=5, what="Cam 2")
    finally:
        sink.stop()
        await _close(viewer, publisher_one, publisher_two)
