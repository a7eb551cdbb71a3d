"""The operator's side of the fault tests and the soak (benchmarks/soak.py): a logged-in
browser session over plain HTTP, and the Live Director's socket as the page's ws extension
keeps it (it reconnects with backoff when the socket drops, and counts what it got)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import websockets
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from devices.simulator import Simulator
from devices.simulator_operator import parse_session_list
from ledger.convex import ConvexLedger
from tests.support.bridge import Bridge
from tests.support.server import RunningServer

LOGIN_PATH = "/accounts/login/"
_CSRF_INPUT = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
# The page's ws extension waits this long before its first reconnect, doubling to the max.
RECONNECT_FIRST_S = 0.5
RECONNECT_MAX_S = 5.0


class OperatorError(Exception):
    pass


class Operator:
    """One operator logged in through the login form, as a person would be."""

    def __init__(self, url: str, username: str, password: str, *, timeout: float = 15.0) -> None:
        self.url = url.rstrip("/")
        self.client = httpx.Client(base_url=self.url, timeout=timeout)
        page = self.client.get(LOGIN_PATH)
        token = _CSRF_INPUT.search(page.text)
        if token is None:
            raise OperatorError(f"the login page has no CSRF token ({page.status_code})")
        answer = self.client.post(
            LOGIN_PATH,
            data={"username": username, "password": password, "csrfmiddlewaretoken": token[1]},
        )
        if answer.status_code != 302 or "sessionid" not in self.client.cookies:
            raise OperatorError(f"the login was refused ({answer.status_code})")

    @property
    def cookie(self) -> str:
        return f"sessionid={self.client.cookies['sessionid']}"

    def close(self) -> None:
        self.client.close()

    def post(self, path: str, data: dict[str, str] | None = None) -> httpx.Response:
        csrf = self.client.cookies.get("csrftoken") or ""
        return self.client.post(
            path, data=data or {}, headers={"X-CSRFToken": csrf, "HX-Request": "true"}
        )

    def _ok(self, answer: httpx.Response, what: str) -> httpx.Response:
        if answer.status_code not in (200, 302):
            raise OperatorError(f"{what} answered {answer.status_code}: {answer.text[:300]}")
        return answer

    def session_create(self, name: str) -> str:
        self._ok(self.post("/sessions/new", {"name": name}), "creating a session")
        rows = parse_session_list(self.client.get("/").text)
        for row in rows:
            if row.name == name and row.status == "draft":
                return row.id
        raise OperatorError(f"the new session {name!r} is not on the list")

    def session_start(self, session_id: str) -> None:
        self._ok(self.post(f"/sessions/{session_id}/start"), "starting the session")

    def session_stop(self, session_id: str) -> None:
        self._ok(self.post(f"/sessions/{session_id}/stop"), "stopping the session")

    def capture_all(self) -> None:
        self._ok(self.post("/registry/capture-all"), "capture all")

    def ghost_mode(self, session_id: str, mode: str) -> None:
        self._ok(self.post(f"/sessions/{session_id}/ghost/mode", {"mode": mode}), "Ghost mode")


@dataclass
class LiveSocket:
    """The Live Director's socket of one session, kept open as the page keeps it."""

    url: str
    path: str
    cookie: str
    messages: list[tuple[float, str]] = field(default_factory=list)  # (monotonic, text)
    connects: list[float] = field(default_factory=list)  # monotonic time of each open
    drops: list[tuple[float, str]] = field(default_factory=list)  # (monotonic, why)
    refused: int = 0  # opens that failed (the server not answering, or an error)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    @property
    def socket_url(self) -> str:
        return "ws" + self.url.removeprefix("http") + self.path

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self.stopping.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def since(self, moment: float) -> list[str]:
        return [text for at, text in self.messages if at >= moment]

    async def _run(self) -> None:
        backoff = RECONNECT_FIRST_S
        while not self.stopping.is_set():
            try:
                async with websockets.connect(
                    self.socket_url,
                    additional_headers={"Cookie": self.cookie, "Origin": self.url},
                    open_timeout=10,
                    max_size=None,
                ) as socket:
                    self.connects.append(time.monotonic())
                    backoff = RECONNECT_FIRST_S
                    async for raw in socket:
                        text = raw if isinstance(raw, str) else raw.decode()
                        self.messages.append((time.monotonic(), text))
                    self.drops.append((time.monotonic(), f"closed {socket.close_code}"))
            except ConnectionClosed as exc:
                self.drops.append(
                    (time.monotonic(), f"dropped {exc.rcvd.code if exc.rcvd else ''}")
                )
            except (OSError, TimeoutError, InvalidHandshake) as exc:
                self.refused += 1
                self.drops.append((time.monotonic(), f"did not open: {exc!r}"[:200]))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), timeout=backoff)
            backoff = min(backoff * 2, RECONNECT_MAX_S)


# --- The server's ledger, and what Convex holds of it ------------------------------------------


def server_ledger(server: RunningServer, stream: str) -> list[dict[str, Any]]:
    """The stream's ledger rows in the server's database, in seq order."""
    code = f"""
import json
from ledger.models import ProductionEvent
rows = ProductionEvent.objects.filter(stream={stream!r}).order_by("seq")
print(json.dumps([
    {{"event_id": str(e.event_id), "seq": e.seq, "type": e.type, "status": e.status,
      "occurred_at": e.occurred_at.timestamp()}}
    for e in rows
]))
"""
    done = server.manage("shell", "-c", code)
    return list(json.loads(done.stdout.strip().splitlines()[-1]))


def convex_timeline(bridge: Bridge, stream: str) -> list[dict[str, Any]]:
    """Every event the bridge holds for the stream, page after page, in its order."""
    client = ConvexLedger(url=bridge.url, deploy_key=bridge.admin_key)
    rows: list[dict[str, Any]] = []
    after = None
    while True:
        page = client.session_timeline(stream, after_seq=after)
        if not page:
            return rows
        rows += page
        after = int(page[-1]["seq"])


def light_fleet(server: RunningServer, code: str, *, count: int, install_prefix: str) -> Simulator:
    """Simulated phones that pair with `code` and keep their load light: no pose, small stills
    and a 320x240 feed at 5 fps (the faults under test are not about media)."""

    async def code_source() -> str:
        return code

    return Simulator(
        url=server.url,
        count=count,
        code_source=code_source,
        install_prefix=install_prefix,
        pose_fps=0,
        still_size=(320, 240),
        video_size=(320, 240),
        video_fps=5,
    )
