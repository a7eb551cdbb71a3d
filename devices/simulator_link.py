"""A virtual iPhone's command link: how it takes commands, carries them out and answers.

Odd-numbered phones take commands on the device WebSocket, even-numbered ones by long poll, so
both delivery paths run. A socket whose upgrade is refused (an older server) is given up for a
while and the phone polls; a socket that drops is reconnected with backoff, polling in the
gaps. A close with code 4401 means the token is no longer good: the phone registers again.

Each command runs in its own task, so a capture waiting for its fire time does not hold up the
next command. Acks go back on the socket the command came by while it is open (and answers),
else by HTTP; acks are idempotent, so sending one twice is harmless, and a command delivered
twice is answered again but never carried out twice.

A still that the server could not take (it answered 5xx, such as 507 when its disk is full, or
did not answer) stays in the phone's outbox, as the capture app keeps the file until the server
has it: the capture is acked failed with that reason, and the outbox uploads it again later,
with backoff, until the server takes it or refuses it for good (4xx).

start_publish acks done once the server has accepted the WHIP offer (the publisher keeps the
video up from then on, through dropped connections, until stop_publish or the simulator
stops), and failed with the server's reason when it refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from devices.ice import ice_host_addresses_apply, ice_host_addresses_from_env
from devices.simulator_camera import StillSpec, human_size, render_still, still_filename, wait_until
from devices.simulator_video import WhipError, phone_publisher

if TYPE_CHECKING:
    from devices.simulator import Simulator, VirtualIPhone

logger = logging.getLogger("motionmix.simulator")

CLOSE_BAD_TOKEN = 4401
POLL_WAIT_S = 25.0
# After a socket upgrade is refused, poll this long before trying the socket again.
SOCKET_RETRY_AFTER_REFUSAL_S = 60.0
# A socket that stayed up this long was healthy: its next reconnect starts from a short delay.
SOCKET_HEALTHY_S = 30.0
# An ack on the socket that is not answered in this time is sent again by HTTP.
SOCKET_ACK_TIMEOUT_S = 5.0
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 10.0
UPLOAD_ATTEMPTS = 5
# A still kept in the outbox is offered again after this long, doubling up to the maximum.
OUTBOX_RETRY_FIRST_S = 2.0
OUTBOX_RETRY_MAX_S = 30.0
# 507: the server's disk is full. Retrying at once cannot help; the outbox tries again later.
INSUFFICIENT_STORAGE = 507
ACK_ATTEMPTS = 4
# Later than this after its fire time, a capture is logged as late.
LATE_FIRE_S = 0.05
# Between the shutter and the encoder: a phone's readout and processing. It matters here for
# another reason: the phones share one process, and an encoder started by the first phone to
# fire takes the CPU (and the GIL) from the shutters of the others, still a few ms from theirs.
READOUT_S = 0.05
REMEMBERED_COMMANDS = 256
EXPIRED_DETAIL = "expired before it arrived"
TALLY_STATES = ("live", "preview", "off")

Outcome = tuple[str, str, float]  # status, detail, done_at (device clock)
CLOSED: dict[str, Any] = {"type": "closed"}  # what an ack waiting on a closed socket gets


@dataclass(frozen=True)
class Command:
    """A command as delivered; every time in it is on the server's clock."""

    id: str
    type: str
    args: dict[str, Any]
    expires_at: float
    fire_at: float | None = None
    clock_offset_s: float | None = None  # the server's estimate sent with it, if any
    arrived_at: float = 0.0  # device clock, when the phone got it

    @classmethod
    def from_json(
        cls, data: dict[str, Any], *, offset_s: float | None = None, arrived_at: float = 0.0
    ) -> Command:
        """`offset_s` stands in for a missing `clock_offset_s`. Raises KeyError, TypeError or
        ValueError for a command without an id, a type or an expiry."""
        args = data.get("args") or {}
        fire_at = data.get("fire_at", args.get("fire_at"))
        offset = data.get("clock_offset_s")
        return cls(
            id=str(data["id"]),
            type=str(data["type"]),
            args=dict(args),
            expires_at=float(data["expires_at"]),
            fire_at=None if fire_at is None else float(fire_at),
            clock_offset_s=offset_s if offset is None else float(offset),
            arrived_at=arrived_at,
        )


@dataclass(frozen=True)
class Capture:
    command_id: str
    arrived_at: float  # device clock, when the command came
    target: float  # the fire time mapped onto the device clock
    captured_at: float  # device clock, when the shutter fired
    filename: str
    size_bytes: int
    still_id: str | None  # None: not uploaded


@dataclass(frozen=True)
class KeptStill:
    """A still the server has not taken yet: kept on the phone, as the capture app keeps it."""

    command_id: str
    filename: str
    jpeg: bytes
    meta: dict[str, Any]


@dataclass(frozen=True)
class UploadOutcome:
    still_id: str | None  # None: not stored
    problem: str = ""
    keep: bool = False  # the server may take it later: keep it in the outbox


class SocketUnavailable(Exception):
    """The server refused the WebSocket upgrade (an older server, or no such route)."""


class PhoneLink:
    def __init__(self, fleet: Simulator, phone: VirtualIPhone) -> None:
        self.fleet = fleet
        self.phone = phone
        self.group: asyncio.TaskGroup | None = None  # the phone's tasks; set while it lives
        self.socket: ClientConnection | None = None
        self.socket_acks: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.answered: dict[str, Outcome | None] = {}
        # start_publish and stop_publish one at a time: each command runs in its own task.
        self.publish_lock = asyncio.Lock()

    def spawn(self, work: Awaitable[Any]) -> None:
        if self.group is None:
            if asyncio.iscoroutine(work):
                work.close()
            return
        phone = self.phone

        async def guarded() -> None:
            # One task gone wrong must not take the phone (and its other tasks) down.
            try:
                await work
            except Exception:
                phone.errors += 1
                logger.exception("%s: a background task failed", phone.label)

        self.group.create_task(guarded())

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.phone.token}"}

    # --- Delivery -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Take commands until the simulator stops: by socket when the phone prefers it and
        the socket is up, by long poll otherwise."""
        loop = asyncio.get_running_loop()
        socket_at = loop.time() if self.phone.prefers_socket else float("inf")
        socket_backoff = RETRY_FIRST_S
        poll_backoff = RETRY_FIRST_S
        while not self.fleet.stopping.is_set():
            if loop.time() >= socket_at:
                started = loop.time()
                try:
                    await self._socket_session()
                except SocketUnavailable as exc:
                    logger.warning(
                        "%s: no command socket (%s); taking commands by long poll",
                        self.phone.label,
                        exc,
                    )
                    socket_at = loop.time() + SOCKET_RETRY_AFTER_REFUSAL_S
                    continue
                if loop.time() - started > SOCKET_HEALTHY_S:
                    socket_backoff = RETRY_FIRST_S
                socket_at = loop.time() + socket_backoff
                logger.info(
                    "%s: command socket down; trying again in %.1f s",
                    self.phone.label,
                    socket_backoff,
                )
                socket_backoff = min(socket_backoff * 2, RETRY_MAX_S)
                continue
            # Poll until the socket is due again (for good, on a polling phone).
            until_socket = max(0.0, socket_at - loop.time())
            if await self.poll(wait_s=min(POLL_WAIT_S, until_socket)):
                poll_backoff = RETRY_FIRST_S
            else:
                await self.fleet.pause(min(poll_backoff, until_socket))
                poll_backoff = min(poll_backoff * 2, RETRY_MAX_S)

    async def poll(self, *, wait_s: float) -> bool:
        """One long poll; False when it failed (the caller backs off)."""
        phone = self.phone
        token = phone.token
        try:
            response = await self.fleet.client.get(
                "/api/v1/devices/commands",
                params={"wait": round(wait_s, 3)},
                headers=self._auth(),
                timeout=wait_s + 10.0,
            )
        except httpx.HTTPError as exc:
            logger.info("%s: command poll failed (%s)", phone.label, exc)
            return False
        if response.status_code == 401:
            await self.fleet.register(phone, stale_token=token)
            return True
        if response.status_code != 200:
            phone.errors += 1
            logger.warning(
                "%s: command poll answered %s %s", phone.label, response.status_code, response.text
            )
            return False
        try:
            body = response.json()
            commands = list(body.get("commands", []))
            if body.get("clock_offset_s") is not None:
                phone.offset_estimate_s = float(body["clock_offset_s"])
        except (ValueError, TypeError, AttributeError) as exc:
            phone.errors += 1
            logger.warning("%s: unreadable command poll answer (%r)", phone.label, exc)
            return False
        for data in commands:
            self._accept(data, socket=None)
        return True

    async def _socket_session(self) -> None:
        """Take commands on the device WebSocket until it closes. Raises SocketUnavailable
        when the server refuses the upgrade; returns on any other failure or close."""
        phone = self.phone
        token = phone.token
        try:
            socket = await connect(
                self.fleet.socket_url, additional_headers={"Authorization": f"Bearer {token}"}
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status < 500:  # the server does not offer the socket (or not to us)
                raise SocketUnavailable(f"the upgrade was answered {status}") from None
            logger.info("%s: command socket upgrade answered %s", phone.label, status)
            return
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            logger.info("%s: command socket did not open (%s)", phone.label, exc)
            return
        self.socket = socket
        try:
            async for raw in socket:
                self._on_socket_message(socket, raw)
        except ConnectionClosed:
            pass
        finally:
            self.socket = None
            # Acks still waiting for an answer go by HTTP instead.
            for waiter in self.socket_acks.values():
                if not waiter.done():
                    waiter.set_result(CLOSED)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(socket.close(), timeout=2.0)
        if socket.close_code == CLOSE_BAD_TOKEN:
            logger.warning("%s: the socket refused the token; registering again", phone.label)
            await self.fleet.register(phone, stale_token=token)

    def _on_socket_message(self, socket: ClientConnection, raw: str | bytes) -> None:
        try:
            message = json.loads(raw)
            kind = message["type"]
        except (ValueError, TypeError, KeyError):
            logger.warning("%s: unreadable socket message %r", self.phone.label, raw[:200])
            return
        if kind == "hello":
            logger.info("%s: command socket open", self.phone.label)
        elif kind == "command":
            self._accept(message.get("command") or {}, socket=socket)
        elif kind in ("ack.ok", "error"):
            waiter = self.socket_acks.get(str(message.get("id", message.get("ref"))))
            if waiter is not None and not waiter.done():
                waiter.set_result(message)
            elif kind == "error":
                logger.warning("%s: the socket answered %s", self.phone.label, message)

    def _accept(self, data: Any, *, socket: ClientConnection | None) -> None:
        phone = self.phone
        try:
            command = Command.from_json(
                data, offset_s=phone.offset_estimate_s, arrived_at=phone.device_clock()
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            logger.warning("%s: malformed command %r", phone.label, data)
            command_id = data.get("id") if isinstance(data, dict) else None
            if command_id is not None:
                outcome = ("rejected", "malformed command", phone.device_clock())
                self.spawn(self._ack(str(command_id), outcome, socket))
            return
        if command.id in self.answered:
            # Delivered twice: answer again, never act twice.
            outcome = self.answered[command.id]
            if outcome is not None:
                self.spawn(self._ack(command.id, outcome, socket))
            return
        self._remember(command.id, None)
        self.spawn(self._carry_out(command, socket))

    def _remember(self, command_id: str, outcome: Outcome | None) -> None:
        self.answered[command_id] = outcome
        while len(self.answered) > REMEMBERED_COMMANDS:
            del self.answered[next(iter(self.answered))]

    # --- Carrying out -------------------------------------------------------------------------

    async def _carry_out(self, command: Command, socket: ClientConnection | None) -> None:
        phone = self.phone
        try:
            outcome = await self.execute(command)
        except Exception as exc:
            # A bug of the app, not a refusal: the operator sees it as a failed command.
            logger.exception("%s: %s failed", phone.label, command.type)
            outcome = ("failed", f"the app failed: {exc!r}"[:500], phone.device_clock())
        self._remember(command.id, outcome)
        status, detail, _ = outcome
        logger.info("%s: %s %s: %s", phone.label, command.type, status, detail)
        await self._ack(command.id, outcome, socket)
        if status == "done":
            phone.commands_done += 1
            if command.type in ("set_lens", "set_flip"):
                phone.beat_now.set()  # the operator's card shows the change at once

    async def execute(self, command: Command) -> Outcome:
        """Carry out one command; returns the ack to send. An expired command is rejected
        without being acted on; so is one the phone cannot do, with the reason."""
        phone = self.phone
        if phone.has_expired(command):
            return ("rejected", EXPIRED_DETAIL, phone.device_clock())
        try:
            if command.type == "set_lens":
                detail = phone.set_lens(command.args)
            elif command.type == "set_flip":
                detail = phone.set_flip(command.args)
            elif command.type == "tally":
                state = command.args.get("state")
                if state not in TALLY_STATES:
                    raise ValueError(f"tally needs live, preview or off, not {state!r}")
                phone.tally = state
                detail = f"tally {state}"
            elif command.type == "capture_still":
                return await self._capture(command)
            elif command.type == "start_publish":
                return await self._start_publish()
            elif command.type == "stop_publish":
                detail = await self._stop_publish()
            else:
                raise ValueError(f"{command.type!r} is not a command this app knows")
        except ValueError as exc:
            return ("rejected", str(exc), phone.device_clock())
        return ("done", detail, phone.device_clock())

    async def _start_publish(self) -> Outcome:
        """Publish the camera over WHIP; done once the server accepted the offer, failed with
        the server's reason when it refused. The server asks only when it holds no publish of
        this camera (its relay restarted, say), so a camera already publishing publishes
        again at once. A 401 is not retried here: the heartbeat finds the token refused and
        registers again, and the operator can ask again."""
        phone = self.phone
        async with self.publish_lock:
            publisher = phone.publisher
            again = publisher is not None and publisher.wanted
            if publisher is None or not again:
                # The relay's choice of ICE host addresses (loopback, say), read as it reads
                # it; unset leaves aioice's default (or a choice made in-process) alone.
                try:
                    addresses = ice_host_addresses_from_env()
                except ValueError as exc:
                    return ("failed", str(exc), phone.device_clock())
                if addresses:
                    ice_host_addresses_apply(addresses)
                publisher = phone_publisher(
                    phone, server_url=self.fleet.url, client=self.fleet.client
                )
            try:
                await (publisher.republish() if again else publisher.start())
            except WhipError as exc:
                phone.errors += 1
                return ("failed", str(exc), phone.device_clock())
            except httpx.HTTPError as exc:
                phone.errors += 1
                detail = f"the WHIP endpoint did not answer ({exc.__class__.__name__})"
                return ("failed", detail, phone.device_clock())
            phone.publisher = publisher
            done = "publishing again" if again else "publishing"
            return ("done", f"{done} {publisher.description}", phone.device_clock())

    async def _stop_publish(self) -> str:
        async with self.publish_lock:
            return await self.stop_publishing()

    async def stop_publishing(self) -> str:
        """Unpublish (idempotent); returns the ack detail."""
        publisher, self.phone.publisher = self.phone.publisher, None
        if publisher is None:
            return "was not publishing"
        await publisher.stop()
        return "stopped publishing"

    async def _capture(self, command: Command) -> Outcome:
        phone = self.phone
        target = phone.fire_time(command)
        captured_at = await wait_until(phone.device_clock, target)
        spec = phone.still_spec(captured_at)  # lens, zoom and flip as they are at the shutter
        if captured_at - target > LATE_FIRE_S:
            logger.warning(
                "%s: fired %.0f ms late: the command came after its fire time",
                phone.label,
                (captured_at - target) * 1e3,
            )
        await self.fleet.pause(READOUT_S)
        # Off the loop: the other phones' shutters must not wait for this one's encoder.
        jpeg = await asyncio.to_thread(render_still, spec)
        filename = still_filename(spec.sequence)
        kept = KeptStill(
            command_id=command.id,
            filename=filename,
            jpeg=jpeg,
            meta=self._still_meta(command, spec, jpeg),
        )
        outcome = await self._upload(kept)
        still_id = outcome.still_id
        phone.captures.append(
            Capture(
                command_id=command.id,
                arrived_at=command.arrived_at,
                target=target,
                captured_at=captured_at,
                filename=filename,
                size_bytes=len(jpeg),
                still_id=still_id,
            )
        )
        if still_id is None and outcome.keep:
            phone.outbox.append(kept)
            phone.outbox_ready.set()
            detail = f"{filename} taken and kept on the phone: {outcome.problem}; uploading later"
            return ("failed", detail[:500], captured_at)
        if still_id is None:
            return ("failed", f"{filename} taken but not uploaded: {outcome.problem}", captured_at)
        phone.stills_uploaded += 1
        return ("done", f"{filename} {human_size(len(jpeg))}", captured_at)

    def _still_meta(self, command: Command, spec: StillSpec, jpeg: bytes) -> dict[str, Any]:
        return {
            "command_id": command.id,
            "captured_at": spec.captured_at,
            "lens": spec.lens,
            "zoom": spec.zoom,
            "flip": {"horizontal": spec.flip_horizontal, "vertical": spec.flip_vertical},
            "orientation": self.phone.orientation,
            "sha256": hashlib.sha256(jpeg).hexdigest(),
        }

    async def _upload(self, kept: KeptStill, *, attempts: int = UPLOAD_ATTEMPTS) -> UploadOutcome:
        """POST the still. Server errors and network failures are retried with backoff, a
        bounded number of times, and then the still is to be kept (`keep`); a 507 (the
        server's disk is full) is kept at once; a refusal (other 4xx) is final."""
        phone = self.phone
        filename, jpeg, meta = kept.filename, kept.jpeg, kept.meta
        problem = ""
        backoff = RETRY_FIRST_S
        for attempt in range(1, attempts + 1):
            token = phone.token
            try:
                response = await self.fleet.client.post(
                    "/api/v1/stills",
                    headers=self._auth(),
                    files={"file": (filename, jpeg, "image/jpeg")},
                    data={"meta": json.dumps(meta)},
                    timeout=60.0,
                )
            except httpx.HTTPError as exc:
                problem = f"network error ({exc.__class__.__name__})"
            else:
                if response.status_code in (200, 201):
                    try:
                        return UploadOutcome(str(response.json()["still_id"]))
                    except (ValueError, KeyError, TypeError):
                        # Stored but unreadable: sent again, it is a duplicate (same sha256),
                        # which the server answers with the id.
                        problem = f"{response.status_code} without a readable still_id"
                elif response.status_code == 401:
                    await self.fleet.register(phone, stale_token=token)
                    continue
                elif response.status_code < 500:
                    problem = f"{response.status_code} {response.text[:300]}"
                    phone.errors += 1
                    logger.warning("%s: the server refused %s: %s", phone.label, filename, problem)
                    return UploadOutcome(None, problem)
                else:
                    problem = f"{response.status_code} {response.text[:300]}"
                    if response.status_code == INSUFFICIENT_STORAGE:
                        phone.errors += 1
                        logger.warning("%s: no room for %s: %s", phone.label, filename, problem)
                        return UploadOutcome(None, problem, keep=True)
            phone.errors += 1
            logger.info("%s: upload %d of %s failed: %s", phone.label, attempt, filename, problem)
            if attempt < attempts:
                await self.fleet.pause(backoff)
                backoff = min(backoff * 2, RETRY_MAX_S)
        return UploadOutcome(None, problem, keep=True)

    async def drain_outbox(self) -> None:
        """Upload the stills the server could not take yet, oldest first, until it takes them
        (or refuses one for good); backs off while it cannot."""
        phone = self.phone
        backoff = OUTBOX_RETRY_FIRST_S
        while not self.fleet.stopping.is_set():
            if not phone.outbox:
                phone.outbox_ready.clear()
                backoff = OUTBOX_RETRY_FIRST_S
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(phone.outbox_ready.wait(), timeout=1.0)
                continue
            await self.fleet.pause(backoff)
            if self.fleet.stopping.is_set():
                return
            kept = phone.outbox[0]
            outcome = await self._upload(kept, attempts=1)
            if outcome.keep:
                backoff = min(backoff * 2, OUTBOX_RETRY_MAX_S)
                logger.info(
                    "%s: %d still(s) kept; next upload try in %g s",
                    phone.label,
                    len(phone.outbox),
                    backoff,
                )
                continue
            phone.outbox.popleft()
            backoff = OUTBOX_RETRY_FIRST_S
            if outcome.still_id is not None:
                phone.stills_uploaded += 1
                logger.info("%s: kept %s uploaded at last", phone.label, kept.filename)

    # --- Answering ----------------------------------------------------------------------------

    async def _ack(
        self, command_id: str, outcome: Outcome, socket: ClientConnection | None
    ) -> None:
        """On the socket the command came by while it is open and answers; else by HTTP."""
        status, detail, done_at = outcome
        if socket is not None and self.socket is socket:
            waiter = asyncio.get_running_loop().create_future()
            self.socket_acks[command_id] = waiter
            message = {
                "type": "ack",
                "id": command_id,
                "status": status,
                "detail": detail,
                "done_at": done_at,
            }
            try:
                await socket.send(json.dumps(message))
                answer = await asyncio.wait_for(waiter, SOCKET_ACK_TIMEOUT_S)
            except (ConnectionClosed, TimeoutError):
                answer = CLOSED
            finally:
                self.socket_acks.pop(command_id, None)
            if answer.get("type") == "error":
                logger.warning("%s: ack of %s refused: %s", self.phone.label, command_id, answer)
            if answer is not CLOSED:
                return
        await self._ack_http(command_id, outcome)

    async def _ack_http(self, command_id: str, outcome: Outcome) -> None:
        phone = self.phone
        status, detail, done_at = outcome
        body = {"status": status, "detail": detail, "done_at": done_at}
        backoff = RETRY_FIRST_S
        for _ in range(ACK_ATTEMPTS):
            token = phone.token
            try:
                response = await self.fleet.client.post(
                    f"/api/v1/devices/commands/{command_id}/ack", json=body, headers=self._auth()
                )
            except httpx.HTTPError as exc:
                logger.info("%s: ack of %s failed (%s)", phone.label, command_id, exc)
            else:
                if response.status_code == 200:
                    return
                if response.status_code == 401:
                    await self.fleet.register(phone, stale_token=token)
                    continue
                if response.status_code < 500:
                    # 404 unknown, 409 expired: the server has the last word; nothing to retry.
                    logger.warning(
                        "%s: ack of %s answered %s %s",
                        phone.label,
                        command_id,
                        response.status_code,
                        response.text,
                    )
                    return
            phone.errors += 1
            await self.fleet.pause(backoff)
            backoff = min(backoff * 2, RETRY_MAX_S)
