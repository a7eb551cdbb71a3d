"""The user journey: a virtual camera (devices/simulator.py, the capture app's contract over
HTTP) pairs and registers, then a throwaway session "preflight <run id>" goes through every
capability the shoot depends on, as an operator's browser does it, and everything is cleaned up.

What is done in the database rather than over HTTP, and why:
- the pairing code is read (or issued) directly: this process runs with the deployment's
  settings, and the registry page shows it only as text for people;
- the session is created and started by `director.services` with the virtual camera alone:
  the page's Start takes every online camera, which would pull the crew's real cameras (or a
  live demo session's) into the throwaway session;
- the service token for Ghost's API is made (and revoked) by its service, as an admin would.
Everything else goes through the deployment's URL: the operator's pages and htmx posts, the
device API, WHIP and WHEP, Ghost's API.

The simulator and the WHEP viewer are asyncio code; they run on an event loop in a thread of
their own, while the steps (sync, with the ORM) wait on them with deadlines.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar
from uuid import UUID

import httpx
from django.conf import settings

from devices.models import Device, DeviceCommand
from devices.simulator import Simulator, VirtualIPhone
from devices.simulator_operator import parse_session_list
from director.models import GhostProposal, PhotoshootSession, Still
from director.preflight.context import Context
from director.preflight.runner import Check, Failed, Run, Skip, run_checks

T = TypeVar("T")

SECTION = "User journey"
INSTALL_PREFIX = "preflight"  # the one virtual camera is "preflight-1", reused by every run
CAMERA_NAME = "Preflight camera"
PLACEMENT = {"azimuth_deg": 123.0, "distance_m": 2.5, "height_m": 1.5}
REGISTER_S = 20.0
ACK_S = 15.0
STILL_S = 25.0
PUBLISH_S = 20.0
FRAME_S = 15.0
CONVEX_SYNC_S = 30.0
STOP_S = 15.0
POLL_S = 0.2


def wait_for(what: str, probe: Callable[[], T | None], *, within: float) -> T:
    """Poll `probe` until it returns something truthy, for at most `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise Failed(f"{what} did not happen within {within:g} s")
        time.sleep(POLL_S)


class LoopThread:
    """An event loop in a daemon thread, for the simulator and the WHEP viewer."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="preflight-loop", daemon=True
        )
        self.thread.start()

    def submit(self, work: Coroutine[Any, Any, T]) -> Any:
        return asyncio.run_coroutine_threadsafe(work, self.loop)

    def run(self, work: Coroutine[Any, Any, T], *, timeout: float) -> T:
        return self.submit(work).result(timeout=timeout)  # type: ignore[no-any-return]

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        if not self.thread.is_alive():
            self.loop.close()


@dataclass
class Journey:
    ctx: Context
    loop: LoopThread | None = None
    simulator: Simulator | None = None
    simulation: Any = None  # the concurrent future of Simulator.run()
    device_id: UUID | None = None
    session_id: UUID | None = None
    token_id: UUID | None = None
    placed: bool = False
    cleanup_notes: list[str] = field(default_factory=list)

    @property
    def phone(self) -> VirtualIPhone:
        assert self.simulator is not None
        return self.simulator.phones[0]

    def post(self, path: str, data: dict[str, Any] | None = None) -> httpx.Response:
        client = self.ctx.operator()
        return client.post(path, data=data or {}, headers=self.ctx.csrf_headers())

    def device(self) -> Device:
        return Device.objects.get(pk=self.device_id)

    # --- 0. pair and register ------------------------------------------------------------------

    def pair(self, ctx: Context) -> str:
        from devices.services import pairing_code_get_or_rotate

        ctx.operator()  # a deployment that cannot be reached or logged into fails here, at once
        code = pairing_code_get_or_rotate().code
        status_ice = []
        with contextlib.suppress(Exception):
            status_ice = list(ctx.server_status().get("ice_host_addresses") or [])
        _adopt_ice_addresses(status_ice)

        async def code_source() -> str:
            return code

        self.loop = LoopThread()
        self.simulator = Simulator(
            url=ctx.url,
            count=1,
            code_source=code_source,
            install_prefix=INSTALL_PREFIX,
            still_size=(640, 480),
            video_size=(320, 240),
            video_fps=15,
            pose_fps=0,
        )
        self.phone.name = CAMERA_NAME
        self.simulation = self.loop.submit(self.simulator.run())
        wait_for(
            "the virtual camera's registration", lambda: self.phone.device_id, within=REGISTER_S
        )
        self.device_id = UUID(self.phone.device_id)
        wait_for(
            "the virtual camera coming online",
            lambda: Device.objects.filter(pk=self.device_id, status=Device.Status.ONLINE).exists(),
            within=REGISTER_S,
        )
        return f"{CAMERA_NAME} registered as {self.device_id} and is online"

    # --- 1. a session starts -------------------------------------------------------------------

    def session_start(self, ctx: Context) -> str:
        from director import services

        user = _user(ctx.credentials.username)
        session = services.session_create(
            name=f"preflight {ctx.run_id}",
            operator=user,
            notes=f"Throwaway session of preflight run {ctx.run_id}; safe to ignore.",
        )
        self.session_id = session.pk
        ctx.notes["session_id"] = str(session.pk)
        assert self.device_id is not None
        services.session_start(session_id=session.pk, device_ids=[self.device_id])
        page = ctx.operator().get("/")
        rows = {row.id: row for row in parse_session_list(page.text)}
        row = rows.get(str(session.pk))
        if row is None or row.status != "live":
            raise Failed(f"the session list does not show “{session.name}” live")
        return f"“{session.name}” ({session.pk}) is live with {CAMERA_NAME}"

    # --- 2, 3. lens and flip -------------------------------------------------------------------

    def _command_done(self, type_: str, posted_after: float) -> DeviceCommand | None:
        command = (
            DeviceCommand.objects.filter(device_id=self.device_id, type=type_)
            .order_by("-issued_at")
            .first()
        )
        if command is None or command.issued_at.timestamp() < posted_after - 1:
            return None
        if command.state in (DeviceCommand.State.FAILED, DeviceCommand.State.REJECTED):
            raise Failed(f"the camera answered {type_} {command.state}: {command.detail}")
        if command.state == DeviceCommand.State.EXPIRED:
            raise Failed(f"{type_} expired before the camera acknowledged it")
        return command if command.state == DeviceCommand.State.DONE else None

    def lens(self, ctx: Context) -> str:
        posted = time.time()
        response = self.post(f"/registry/devices/{self.device_id}/lens", {"zoom": "0.5"})
        if response.status_code != 200:
            raise Failed(f"setting 0.5x answered {response.status_code}: {_toast(response)}")
        command = wait_for(
            "the camera's ack of 0.5x", lambda: self._command_done("set_lens", posted), within=ACK_S
        )
        device = wait_for(
            "a heartbeat reporting 0.5x",
            lambda: (d := self.device()).zoom == 0.5 and d.lens == "ultra_wide" and d,
            within=ACK_S,
        )
        return f"acknowledged ({command.detail or 'done'}); the camera reports {device.lens} 0.5x"

    def flip(self, ctx: Context) -> str:
        before = self.device().flip_horizontal
        posted = time.time()
        response = self.post(f"/registry/devices/{self.device_id}/flip", {"axis": "horizontal"})
        if response.status_code != 200:
            raise Failed(f"flipping answered {response.status_code}: {_toast(response)}")
        command = wait_for(
            "the camera's ack of the flip",
            lambda: self._command_done("set_flip", posted),
            within=ACK_S,
        )
        wait_for(
            "a heartbeat reporting the flip",
            lambda: self.device().flip_horizontal is not before,
            within=ACK_S,
        )
        return f"horizontal flip {'off' if before else 'on'}, acknowledged ({command.detail})"

    # --- 4. a still, with its placement snapshot -----------------------------------------------

    def place(self) -> None:
        if self.placed:
            return
        response = self.post(
            f"/registry/devices/{self.device_id}/place",
            {k: str(v) for k, v in PLACEMENT.items()},
        )
        if response.status_code != 200:
            raise Failed(f"placing the camera answered {response.status_code}: {_toast(response)}")
        self.placed = True

    def still(self, ctx: Context) -> str:
        self.place()
        response = self.post(f"/registry/devices/{self.device_id}/capture")
        if response.status_code != 200:
            raise Failed(f"capture answered {response.status_code}: {_toast(response)}")
        still = wait_for(
            "a still uploaded and thumbnailed",
            lambda: (
                Still.objects.filter(session_id=self.session_id, device_id=self.device_id)
                .exclude(thumbnail="")
                .first()
            ),
            within=STILL_S,
        )
        device = self.device()
        snapshot = {
            "azimuth_deg": still.azimuth_deg,
            "distance_m": still.distance_m,
            "height_m": still.height_m,
        }
        if snapshot != PLACEMENT:
            raise Failed(f"the still's placement snapshot is {snapshot}, not {PLACEMENT}")
        taken = (still.lens, still.zoom, still.flip_horizontal)
        reported = (device.lens, device.zoom, device.flip_horizontal)
        if taken != reported:
            raise Failed(f"the still records lens, zoom, flip {taken}; the camera is {reported}")
        thumb = ctx.operator().get(f"/stills/{still.pk}/thumb.jpg")
        if thumb.status_code != 200 or not thumb.headers.get("content-type", "").startswith(
            "image/"
        ):
            raise Failed(f"the thumbnail answered {thumb.status_code}")
        return (
            f"still {still.pk} ({still.width}x{still.height}, {still.lens} {still.zoom:g}x) at "
            f"{still.azimuth_deg:g}°, {still.distance_m:g} m; thumbnail {len(thumb.content)} bytes"
        )

    # --- 5. the coverage map -------------------------------------------------------------------

    def coverage(self, ctx: Context) -> str:
        self.place()
        response = ctx.operator().get("/registry/coverage")
        if response.status_code != 200:
            raise Failed(f"the coverage map answered {response.status_code}")
        marker = f'data-device-id="{self.device_id}"'
        at = response.text.find(marker)
        if at < 0:
            raise Failed(f"{CAMERA_NAME} is not on the coverage map")
        tag = response.text[at : response.text.find(">", at)]
        if 'data-azimuth="123' not in tag:
            raise Failed(f"{CAMERA_NAME} is on the map, but not at 123°: {tag[:200]}")
        return f"{CAMERA_NAME} is on the map at {PLACEMENT['azimuth_deg']:g}°"

    # --- 6. WHIP in, WHEP out --------------------------------------------------------------------

    def hero(self, ctx: Context) -> str:
        wait_for(
            "the camera's WHIP publish reaching the relay",
            lambda: self.device().publishing_since is not None,
            within=PUBLISH_S,
        )
        assert self.loop is not None
        cookies = dict(ctx.operator().cookies)
        frame = self.loop.run(
            _whep_first_frame(ctx.url, str(self.session_id), cookies, ctx.csrf_headers()),
            timeout=FRAME_S + 15,
        )
        return f"WHEP played the hero: first frame {frame} decoded"

    # --- 7. Ghost ------------------------------------------------------------------------------

    def ghost(self, ctx: Context) -> str:
        from director.service_tokens import service_token_create

        token, raw = service_token_create(
            name=f"preflight-{ctx.run_id[:8]}", created_by=_user(ctx.credentials.username)
        )
        self.token_id = token.pk
        api = httpx.Client(
            base_url=ctx.url, timeout=ctx.timeout_s, headers={"Authorization": f"Bearer {raw}"}
        )
        with api:
            ids = [self._propose(api, rationale) for rationale in _RATIONALES]
            accepted = self.post(f"/sessions/{self.session_id}/ghost/{ids[0]}/accept")
            if accepted.status_code != 200:
                raise Failed(f"accepting answered {accepted.status_code}: {_toast(accepted)}")
            vetoed = self.post(
                f"/sessions/{self.session_id}/ghost/{ids[1]}/veto", {"reason": "other"}
            )
            if vetoed.status_code != 200:
                raise Failed(f"vetoing answered {vetoed.status_code}: {_toast(vetoed)}")
            states = [api.get(f"/api/v1/ghost/proposals/{pk}").json() for pk in ids]
        first, second = states
        if first.get("state") not in (GhostProposal.State.ACCEPTED, GhostProposal.State.EXECUTED):
            raise Failed(f"the accepted proposal is {first.get('state')}: {first.get('result')}")
        if second.get("state") != GhostProposal.State.VETOED:
            raise Failed(f"the vetoed proposal is {second.get('state')}")
        return (
            f"{ids[0]} {first['state']} by {first['decided_by']} ({first.get('result') or '-'}); "
            f"{ids[1]} vetoed ({second['veto_reason']})"
        )

    def _propose(self, api: httpx.Client, rationale: str) -> str:
        response = api.post(
            "/api/v1/ghost/proposals",
            json={
                "session_id": str(self.session_id),
                "kind": "set_lens",
                "targets": [str(self.device_id)],
                "payload": {"zoom": 1.0},
                "rationale": rationale,
                "confidence": 0.5,
                # Above Ghost's own policies, which may propose for this session too.
                "priority": 100,
                "ttl_s": 60.0,
            },
        )
        if response.status_code != 201:
            raise Failed(
                f"POST /api/v1/ghost/proposals answered {response.status_code}: "
                f"{response.text[:200]}"
            )
        return str(response.json()["proposal_id"])

    # --- 8. stop, 9. Convex ---------------------------------------------------------------------

    def stop(self, ctx: Context) -> str:
        response = self.post(f"/sessions/{self.session_id}/stop")
        if response.status_code != 200:
            raise Failed(f"stopping answered {response.status_code}: {_toast(response)}")
        session = PhotoshootSession.objects.get(pk=self.session_id)
        if session.status != PhotoshootSession.Status.ENDED:
            raise Failed(f"the session is {session.status} after its stop")
        return f"ended after {session.duration_s or 0:.1f} s"

    def convex(self, ctx: Context) -> str:
        url, key = ctx.convex()
        if not url:
            raise Skip("no Convex configured: CONVEX_URL is not set and the server runs no bridge")
        from ledger.convex import ConvexLedger, SyncError
        from ledger.models import ProductionEvent

        expected = {
            str(e)
            for e in ProductionEvent.objects.filter(stream=str(self.session_id)).values_list(
                "event_id", flat=True
            )
        }
        ledger = ConvexLedger(url, deploy_key=key)
        seen: set[str] = set()

        def synced() -> bool:
            try:
                timeline = ledger.session_timeline(str(self.session_id))
            except SyncError:
                return False
            seen.clear()
            seen.update(str(item.get("eventId")) for item in timeline)
            return expected <= seen

        try:
            wait_for("the session's events in Convex", synced, within=CONVEX_SYNC_S)
        except Failed:
            raise Failed(
                f"{len(expected - seen)} of the session's {len(expected)} events are not in "
                f"Convex at {url} after {CONVEX_SYNC_S:g} s: is the ledger sync running?"
            ) from None
        return f"all {len(expected)} events of the session read back from {url}"

    # --- Cleanup ---------------------------------------------------------------------------------

    def cleanup(self, ctx: Context) -> str:
        from director import services
        from director.preflight.services import preflight_device_revoke
        from director.service_tokens import service_token_revoke

        done, problems = [], []
        if self.simulator is not None and self.loop is not None:
            self.loop.loop.call_soon_threadsafe(self.simulator.stop)
            try:
                self.simulation.result(timeout=STOP_S)
                done.append("virtual camera stopped")
            except Exception as exc:
                problems.append(f"the virtual camera did not stop cleanly ({exc!r})")
        if self.loop is not None:
            self.loop.close()
        if self.session_id is not None:
            session = PhotoshootSession.objects.get(pk=self.session_id)
            if session.status == PhotoshootSession.Status.LIVE:
                services.session_stop(session_id=session.pk)
                done.append("session stopped")
            else:
                done.append(f"session {session.status}")
        if self.device_id is not None:
            preflight_device_revoke(device_id=self.device_id)
            done.append("camera's token revoked, marked offline")
        if self.token_id is not None:
            service_token_revoke(token_id=self.token_id)
            done.append("service token revoked")
        if problems:
            raise Failed("; ".join(problems + done))
        return "; ".join(done) or "nothing to clean up"


_RATIONALES = (
    "Preflight: accept this proposal (back to 1x).",
    "Preflight: veto this proposal.",
)


def _user(username: str) -> Any:
    from django.contrib.auth import get_user_model

    return get_user_model().objects.get(username=username)


def _toast(response: httpx.Response) -> str:
    import json

    with contextlib.suppress(ValueError, KeyError, TypeError):
        return str(json.loads(response.headers.get("HX-Trigger", ""))["toast"]["message"])
    return response.text[:200].strip()


def _adopt_ice_addresses(server_addresses: list[str]) -> None:
    """Offer the ICE addresses this deployment's relay offers (`make run` sets 127.0.0.1 for
    its own process only), unless this process was given its own."""
    import os

    from devices.ice import ENV_VAR, ice_host_addresses_apply

    addresses = list(settings.MOTIONMIX_ICE_HOST_ADDRESSES) or server_addresses
    if addresses:
        # The simulator's publisher reads the variable when it publishes.
        os.environ.setdefault(ENV_VAR, ",".join(addresses))
        ice_host_addresses_apply(addresses)


async def _whep_first_frame(
    url: str, session_id: str, cookies: dict[str, str], headers: dict[str, str]
) -> str:
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
    from av import VideoFrame

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    got: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    readers: list[asyncio.Future[None]] = []

    @pc.on("track")
    def on_track(track: Any) -> None:
        async def read() -> None:
            with contextlib.suppress(Exception):
                while not got.done():
                    frame = await track.recv()
                    if isinstance(frame, VideoFrame) and not got.done():
                        got.set_result(f"{frame.width}x{frame.height}")

        readers.append(asyncio.ensure_future(read()))

    pc.addTransceiver("video", direction="recvonly")
    location = ""
    async with httpx.AsyncClient(base_url=url, cookies=cookies, timeout=10.0) as client:
        try:
            await pc.setLocalDescription(await pc.createOffer())
            response = await client.post(
                f"/sessions/{session_id}/whep",
                content=pc.localDescription.sdp.encode(),
                headers={**headers, "Content-Type": "application/sdp"},
            )
            if response.status_code != 201:
                raise Failed(f"WHEP answered {response.status_code}: {response.text[:200]}")
            location = response.headers.get("location", "")
            await pc.setRemoteDescription(RTCSessionDescription(sdp=response.text, type="answer"))
            try:
                return await asyncio.wait_for(got, timeout=FRAME_S)
            except TimeoutError:
                raise Failed(
                    f"no hero frame decoded within {FRAME_S:g} s (connection {pc.connectionState})"
                ) from None
        finally:
            if location:
                with contextlib.suppress(httpx.HTTPError):
                    await client.delete(location, headers=headers)
            await pc.close()
            for reader in readers:
                reader.cancel()


def run_journey(
    ctx: Context,
    run: Run,
    *,
    on_start: Callable[[Check], None] | None = None,
    on_result: Callable[[Any], None] | None = None,
) -> None:
    journey = Journey(ctx)

    def step(key: str, name: str, fn: Callable[[Context], str], *needs: str) -> Check:
        return Check(SECTION, key, name, fn, needs)

    steps = [
        step("j_pair", "A virtual camera pairs and registers", journey.pair),
        step("j_session", "1. A throwaway session starts", journey.session_start, "j_pair"),
        step("j_lens", "2. 0.5x is set and acknowledged", journey.lens, "j_session"),
        step("j_flip", "3. A flip is set and acknowledged", journey.flip, "j_session"),
        step("j_still", "4. A still with its placement snapshot", journey.still, "j_session"),
        step("j_coverage", "5. The camera is on the coverage map", journey.coverage, "j_pair"),
        step("j_hero", "6. WHIP publish plays back through WHEP", journey.hero, "j_session"),
        step("j_ghost", "7. Ghost: one accepted, one vetoed", journey.ghost, "j_session"),
        step("j_stop", "8. The session stops", journey.stop, "j_session"),
        step("j_convex", "9. Its events read back from Convex", journey.convex, "j_stop"),
    ]
    try:
        run_checks(steps, ctx, run, on_start=on_start, on_result=on_result)
    finally:
        run_checks(
            [step("j_cleanup", "Clean up", journey.cleanup)],
            ctx,
            run,
            on_start=on_start,
            on_result=on_result,
        )
