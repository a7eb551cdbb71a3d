"""A simulated stand-in operator, so that `make run` shows Ghost working with nobody at the desk.

It uses the operator's own web pages over HTTP, as a person in a browser would (htmx posts with
the CSRF token in `X-CSRFToken`), and imports nothing of the director app. With a login of its
own (`stand-in`, made by `serve --stand-in`), the ledger shows its decisions `by: stand-in`,
never under the human operator's name.

What it does, over and over until the simulator stops:

1. Logs in (again, whenever the server sends it back to the login page).
2. Finds the live session on the session list (the newest, when several are live), read again
   every `list_every_s`.
3. With `start_session`, when nothing is live: waits for the cameras to come online (all the
   `expected_cameras`, or `settle_s` after the first one), then starts a draft "Demo shoot"
   (creating one if there is none) and puts its Ghost in supervised mode. It starts at most one
   session every `restart_after_s` (5 minutes): an operator who ends the demo session gets a new
   one only after that, not a second later.
4. Polls the session's Ghost banner every `poll_s`. Each new proposal takes the next step of the
   schedule after a human-like pause (`delay_s`, from a seeded RNG): `accept`, `veto:<reason>`,
   or `wait` (nobody presses anything; the proposal expires, or in autopilot runs by itself).
   A 409 means someone decided first (the real operator in a browser, say) or it ran out: it is
   logged and the stand-in goes on.

5. With `music` (or by calling `music_play`), it uploads a music track to the live session
   (a file, or a generated 120 BPM click track when there is none) and plays it as an
   operator would: play, a pause, a seek back, play to the end, and again, each step posted
   as a cue (`/sessions/<id>/music/cue`) with the simulated player's position.

Every decision is one log line. Connection errors and server restarts are retried with backoff;
nothing the server answers stops the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import io
import json
import logging
import mimetypes
import random
import re
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import av
import httpx
import numpy as np

logger = logging.getLogger("motionmix.simulator.stand_in")

SESSION_NAME = "Demo shoot"
DEFAULT_SCHEDULE = "accept,accept,veto:wrong_moment,accept,veto:bad_framing,wait"
DEFAULT_DELAY_S = (1.5, 4.0)
# The veto reasons the operator's banner offers (director.models.GhostProposal.VetoReason).
VETO_REASONS = ("bad_framing", "wrong_moment", "device_problem", "other")
POLL_S = 0.5
LIST_EVERY_S = 3.0
RESTART_AFTER_S = 300.0
SETTLE_S = 5.0
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 10.0
LOGIN_REFUSED_RETRY_S = 30.0
REMEMBERED_PROPOSALS = 256

LOGIN_PATH = "/accounts/login/"

_ROW = re.compile(
    r'<tr id="session-(?P<id>[0-9a-f-]{36})-row" data-status="(?P<status>\w+)"[^>]*>'
    r"(?P<body>.*?)</tr>",
    re.DOTALL,
)
_ROW_NAME = re.compile(r'data-testid="session-open"[^>]*>(?P<name>.*?)</a>', re.DOTALL)
_BANNER = re.compile(r'<section id="ghost-banner"(?P<attrs>[^>]*)>', re.DOTALL)
_ATTR = re.compile(r'\s(?P<name>[\w-]+)="(?P<value>[^"]*)"')
_RATIONALE = re.compile(r'data-testid="ghost-rationale"[^>]*>(?P<text>.*?)</p>', re.DOTALL)
_TARGET = re.compile(r'data-testid="ghost-target"[^>]*>(?P<name>.*?)</strong>', re.DOTALL)
_CARD = re.compile(r"<article\b[^>]*>", re.DOTALL)


_MUSIC_PANEL = re.compile(r'<section id="music-panel"(?P<attrs>[^>]*)>', re.DOTALL)
_MUSIC_BPM = re.compile(r'data-testid="music-bpm"[^>]*>(?P<bpm>[\d.]+) BPM<', re.DOTALL)
CLICK_BPM = 120.0
CLICK_DURATION_S = 30.0
CLICK_SAMPLE_RATE = 22050
CLICK_NAME = "click-120bpm.wav"
# Between two play-throughs of the music, and before the first play once it is uploaded.
MUSIC_REST_S = 5.0


class ScheduleError(ValueError):
    """A schedule string the stand-in cannot follow; the message says what is wrong."""


@dataclass(frozen=True)
class Step:
    action: Literal["accept", "veto", "wait"]
    reason: str = ""

    def __str__(self) -> str:
        return f"veto:{self.reason}" if self.action == "veto" else self.action


def parse_schedule(text: str) -> tuple[Step, ...]:
    """`accept,veto:wrong_moment,wait` → the steps, cycled through one per proposal."""
    steps: list[Step] = []
    for position, raw in enumerate(text.split(","), start=1):
        item = raw.strip().lower()
        if not item:
            raise ScheduleError(
                f"Step {position} of the schedule {text!r} is empty; write steps like "
                f"{DEFAULT_SCHEDULE!r}."
            )
        action, sep, reason = item.partition(":")
        if action == "accept" and not sep:
            steps.append(Step("accept"))
        elif action == "wait" and not sep:
            steps.append(Step("wait"))
        elif action == "veto":
            if reason not in VETO_REASONS:
                raise ScheduleError(
                    f"Step {position} ({raw.strip()!r}): a veto needs a reason, one of "
                    f"{', '.join('veto:' + r for r in VETO_REASONS)}."
                )
            steps.append(Step("veto", reason))
        else:
            raise ScheduleError(
                f"Step {position} ({raw.strip()!r}) is not accept, veto:<reason> or wait."
            )
    return tuple(steps)


def parse_delay(text: str) -> tuple[float, float]:
    """`1.5-4` (seconds, a range) or `2` (always the same) → (low, high)."""
    low_text, _, high_text = text.partition("-")
    try:
        low = float(low_text)
        high = float(high_text) if high_text else low
    except ValueError:
        raise ValueError(f"{text!r} is not a delay in seconds like 1.5-4") from None
    if not 0 <= low <= high:
        raise ValueError(f"{text!r}: the delay is MIN-MAX seconds, 0 <= MIN <= MAX")
    return low, high


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str


def load_credentials(path: Path) -> Credentials:
    """The stand-in's login from a JSON file {"username": ..., "password": ...}."""
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise ValueError(f"cannot read the stand-in's login {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f'{path} must hold {{"username": ..., "password": ...}}')
    username, password = data.get("username"), data.get("password")
    if not isinstance(username, str) or not username or not isinstance(password, str):
        raise ValueError(f'{path} must hold {{"username": ..., "password": ...}}')
    return Credentials(username=username, password=password)


@dataclass(frozen=True)
class SessionRow:
    id: str
    status: str
    name: str


def parse_session_list(page: str) -> list[SessionRow]:
    """The rows of the session list, newest first as the page shows them."""
    rows = []
    for match in _ROW.finditer(page):
        name_match = _ROW_NAME.search(match["body"])
        name = html.unescape(name_match["name"]).strip() if name_match else ""
        rows.append(SessionRow(id=match["id"], status=match["status"], name=name))
    return rows


@dataclass(frozen=True)
class BannerProposal:
    id: str
    kind: str
    rationale: str
    targets: tuple[str, ...]

    def describe(self) -> str:
        on = f" {', '.join(self.targets)}" if self.targets else ""
        return f"{self.kind}{on}"


def parse_banner(fragment: str) -> BannerProposal | None:
    """The proposal on the Ghost banner, or None when nothing is pending."""
    match = _BANNER.search(fragment)
    if match is None:
        return None
    attrs = {a["name"]: html.unescape(a["value"]) for a in _ATTR.finditer(match["attrs"])}
    proposal_id = attrs.get("data-proposal-id")
    if not proposal_id:
        return None
    rationale = _RATIONALE.search(fragment)
    return BannerProposal(
        id=proposal_id,
        kind=attrs.get("data-kind", "proposal"),
        rationale=html.unescape(rationale["text"]).strip() if rationale else "",
        targets=tuple(html.unescape(t["name"]).strip() for t in _TARGET.finditer(fragment)),
    )


def count_online_cameras(page: str) -> int:
    """Online cameras (not webcams) on the registry page: the ones a session start takes."""
    online = 0
    for match in _CARD.finditer(page):
        attrs = {a["name"]: a["value"] for a in _ATTR.finditer(match.group(0))}
        if attrs.get("data-status") == "online" and attrs.get("data-kind") != "webcam":
            online += 1
    return online


def _toast(response: httpx.Response) -> str:
    """The message of the toast a refusal carries in HX-Trigger, else the body's start."""
    trigger = response.headers.get("HX-Trigger", "")
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        return str(json.loads(trigger)["toast"]["message"])
    return response.text[:200].strip() or f"HTTP {response.status_code}"


class _Trouble(Exception):
    """An answer the stand-in cannot go on with this round; it retries with backoff."""

    def __init__(self, message: str, *, retry_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_s = retry_s


class _LoggedOut(Exception):
    """The server sent the stand-in to the login page: log in again at once."""


@dataclass
class Decision:
    proposal_id: str
    step: str
    outcome: str  # "accepted", "vetoed", "waited", "late" (409), "refused"
    detail: str = ""


@dataclass
class StandIn:
    url: str
    credentials: Credentials
    schedule: tuple[Step, ...] = field(default_factory=lambda: parse_schedule(DEFAULT_SCHEDULE))
    start_session: bool = False
    expected_cameras: int | None = None
    delay_s: tuple[float, float] = DEFAULT_DELAY_S
    seed: int | None = None
    poll_s: float = POLL_S
    restart_after_s: float = RESTART_AFTER_S
    settle_s: float = SETTLE_S
    list_every_s: float = LIST_EVERY_S
    session_name: str = SESSION_NAME
    transport: httpx.AsyncBaseTransport | None = None
    # Upload a track to each live session and play it (see `music_play`).
    music: bool = False
    music_path: Path | None = None

    def __post_init__(self) -> None:
        if not self.schedule:
            raise ScheduleError("The stand-in's schedule has no steps.")
        self.url = self.url.rstrip("/")
        self.rng = random.Random(self.seed)  # noqa: S311 - a simulation, not a secret
        self.stopping = asyncio.Event()
        self.decisions: deque[Decision] = deque(maxlen=REMEMBERED_PROPOSALS)
        self.accepted = 0
        self.vetoed = 0
        self.waited = 0
        self.late = 0
        self.errors = 0
        self.sessions_started = 0
        self._next_step = 0
        self._seen: deque[str] = deque(maxlen=REMEMBERED_PROPOSALS)
        self._logged_in = False
        self._last_start: float | None = None  # monotonic time of the last start attempt
        self._first_camera_at: float | None = None
        self._said: set[str] = set()  # one-off notices already logged
        self._client: httpx.AsyncClient | None = None
        self._live: SessionRow | None = None
        self._live_read_at: float | None = None
        self.music_cues = 0
        self._music_task: asyncio.Task[None] | None = None
        self._music_session: str | None = None

    # --- Running --------------------------------------------------------------------------

    def stop(self) -> None:
        self.stopping.set()

    async def pause(self, seconds: float) -> None:
        """A sleep that ends early when the stand-in stops."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), timeout=max(0.0, seconds))

    async def run(self, *, duration_s: float | None = None) -> None:
        deadline = None if duration_s is None else time.monotonic() + duration_s
        async with httpx.AsyncClient(
            base_url=self.url, timeout=10.0, transport=self.transport, follow_redirects=False
        ) as client:
            self._client = client
            backoff = RETRY_FIRST_S
            try:
                while not self.stopping.is_set():
                    if deadline is not None and time.monotonic() >= deadline:
                        break
                    wait = self.poll_s
                    try:
                        await self._round()
                        backoff = RETRY_FIRST_S
                    except _LoggedOut:
                        self._forget_live()
                        # Logged out (a new server, an expired session): log in again soon; a
                        # server that keeps refusing is not asked in a tight loop.
                        self._logged_in = False
                        logger.info("stand-in: the server wants a login again")
                        wait = backoff
                        backoff = min(backoff * 2, RETRY_MAX_S)
                    except (httpx.HTTPError, _Trouble) as exc:
                        self.errors += 1
                        retry = getattr(exc, "retry_s", None) or backoff
                        logger.info("stand-in: %s; retrying in %.1f s", _describe(exc), retry)
                        wait = retry
                        backoff = min(backoff * 2, RETRY_MAX_S)
                    except Exception:
                        # Nothing the server answers may end the demo: log it, go on.
                        self.errors += 1
                        logger.exception("stand-in: unexpected failure; retrying")
                        wait = backoff
                        backoff = min(backoff * 2, RETRY_MAX_S)
                    if deadline is not None:
                        wait = min(wait, max(0.0, deadline - time.monotonic()))
                    await self.pause(wait)
            finally:
                if self._music_task is not None:
                    self._music_task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await self._music_task
                    self._music_task = None
                self._client = None

    @property
    def client(self) -> httpx.AsyncClient:
        assert self._client is not None, "the stand-in is not running"
        return self._client

    async def _round(self) -> None:
        if not self._logged_in:
            await self._log_in()
        session = await self._live_session_cached()
        if session is None:
            if self.start_session:
                await self._maybe_start()
            else:
                self._say_once("idle", "stand-in: no live session; waiting for one")
            return
        self._said.discard("idle")
        if self.music and self._music_session != session.id:
            self._music_session = session.id
            if self._music_task is not None:
                self._music_task.cancel()
            self._music_task = asyncio.create_task(self._music_loop(session.id))
        proposal = await self._banner(session.id)
        if proposal is None or proposal.id in self._seen:
            return
        self._seen.append(proposal.id)
        step = self.schedule[self._next_step % len(self.schedule)]
        self._next_step += 1
        await self._decide(session, proposal, step)

    def _say_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._said:
            self._said.add(key)
            logger.info(message, *args)

    # --- HTTP -----------------------------------------------------------------------------

    def _csrf_token(self) -> str:
        token = ""
        for cookie in self.client.cookies.jar:
            if cookie.name == "csrftoken" and cookie.value:
                token = cookie.value
        return token

    async def _get(self, path: str) -> httpx.Response:
        response = await self.client.get(path)
        self._check(response)
        return response

    async def _post(self, path: str, data: dict[str, str] | None = None) -> httpx.Response:
        response = await self.client.post(
            path, data=data or {}, headers={"X-CSRFToken": self._csrf_token(), "HX-Request": "true"}
        )
        self._check(response)
        return response

    @staticmethod
    def _check(response: httpx.Response) -> None:
        if response.status_code in (301, 302, 303) and response.headers.get(
            "Location", ""
        ).startswith(LOGIN_PATH):
            raise _LoggedOut
        if response.status_code == 403:
            # A CSRF failure (a new secret after a restart) or a lost login: start afresh.
            raise _LoggedOut
        if response.status_code >= 500:
            raise _Trouble(f"{response.request.url.path} answered {response.status_code}")

    async def _log_in(self) -> None:
        self.client.cookies.clear()
        page = await self.client.get(LOGIN_PATH)
        if page.status_code != 200:
            raise _Trouble(f"the login page answered {page.status_code}")
        response = await self.client.post(
            LOGIN_PATH,
            data={
                "username": self.credentials.username,
                "password": self.credentials.password,
                "csrfmiddlewaretoken": self._csrf_token(),
            },
        )
        if response.status_code != 302:
            raise _Trouble(
                f"the server refused the login of {self.credentials.username!r} "
                f"({response.status_code})",
                retry_s=LOGIN_REFUSED_RETRY_S,
            )
        self._logged_in = True
        logger.info("stand-in: logged in as %s", self.credentials.username)

    async def _sessions(self) -> list[SessionRow]:
        response = await self._get("/")
        if response.status_code != 200:
            raise _Trouble(f"the session list answered {response.status_code}")
        return parse_session_list(response.text)

    async def _live_session(self) -> SessionRow | None:
        return next((row for row in await self._sessions() if row.status == "live"), None)

    async def _live_session_cached(self) -> SessionRow | None:
        """The live session, read off the session list at most every `list_every_s`: the
        banner is polled far more often than sessions start and stop."""
        now = time.monotonic()
        if self._live_read_at is None or now - self._live_read_at >= self.list_every_s:
            self._live = await self._live_session()
            self._live_read_at = now
        return self._live

    def _forget_live(self) -> None:
        """Read the session list again next round."""
        self._live_read_at = None

    async def _banner(self, session_id: str) -> BannerProposal | None:
        response = await self._get(f"/sessions/{session_id}/ghost/banner")
        if response.status_code == 404:
            self._forget_live()  # the session went away since the list was read
            return None
        if response.status_code != 200:
            raise _Trouble(f"the Ghost banner answered {response.status_code}")
        return parse_banner(response.text)

    async def _online_cameras(self) -> int:
        response = await self._get("/registry/")
        if response.status_code != 200:
            raise _Trouble(f"the registry answered {response.status_code}")
        return count_online_cameras(response.text)

    # --- Starting the demo session --------------------------------------------------------

    async def _maybe_start(self) -> None:
        now = time.monotonic()
        if self._last_start is not None and now - self._last_start < self.restart_after_s:
            self._say_once(
                "ended",
                "stand-in: no live session; it starts another “%s” %.0f s after the last, "
                "if none is live by then",
                self.session_name,
                self.restart_after_s,
            )
            return
        online = await self._online_cameras()
        if online == 0:
            self._first_camera_at = None
            self._say_once("cameras", "stand-in: waiting for a camera to come online")
            return
        if self._first_camera_at is None:
            self._first_camera_at = now
        all_here = self.expected_cameras is not None and online >= self.expected_cameras
        if not all_here and now - self._first_camera_at < self.settle_s:
            return  # the other cameras are likely pairing right now
        self._last_start = now
        self._first_camera_at = None
        self._said.difference_update({"ended", "cameras"})
        draft = await self._draft()
        if draft is None:
            response = await self._post(
                "/sessions/new",
                {"name": self.session_name, "notes": "Started by the simulated stand-in."},
            )
            if response.status_code not in (200, 302):
                logger.warning("stand-in: creating a session answered %s", response.status_code)
                return
            draft = await self._draft()
            if draft is None:
                logger.warning("stand-in: the new “%s” is not on the list", self.session_name)
                return
        response = await self._post(f"/sessions/{draft.id}/start")
        if response.status_code != 200:
            logger.warning(
                "stand-in: “%s” did not start (%s): %s",
                self.session_name,
                response.status_code,
                _toast(response),
            )
            return
        self.sessions_started += 1
        self._forget_live()
        logger.info(
            "stand-in: started “%s” (%s) with %d camera(s)", self.session_name, draft.id, online
        )
        mode = await self._post(f"/sessions/{draft.id}/ghost/mode", {"mode": "supervised"})
        if mode.status_code != 200:
            logger.warning("stand-in: Ghost mode answered %s: %s", mode.status_code, _toast(mode))

    async def _draft(self) -> SessionRow | None:
        return next(
            (
                row
                for row in await self._sessions()
                if row.status == "draft" and row.name == self.session_name
            ),
            None,
        )

    # --- Deciding -------------------------------------------------------------------------

    async def _decide(self, session: SessionRow, proposal: BannerProposal, step: Step) -> None:
        quoted = f"“{proposal.rationale}”" if proposal.rationale else "(no rationale)"
        if step.action == "wait":
            self.waited += 1
            self.decisions.append(Decision(proposal.id, str(step), "waited"))
            logger.info("stand-in: lets %s run out (no decision): %s", proposal.describe(), quoted)
            return
        think_s = self.rng.uniform(*self.delay_s)
        await self.pause(think_s)
        if self.stopping.is_set():
            return
        base = f"/sessions/{session.id}/ghost/{proposal.id}"
        if step.action == "accept":
            response = await self._post(f"{base}/accept")
        else:
            response = await self._post(f"{base}/veto", {"reason": step.reason})
        if response.status_code == 200:
            if step.action == "accept":
                self.accepted += 1
                outcome, what = "accepted", proposal.describe()
            else:
                self.vetoed += 1
                outcome, what = "vetoed", f"{proposal.describe()} ({step.reason})"
            self.decisions.append(Decision(proposal.id, str(step), outcome, _toast(response)))
            logger.info("stand-in: %s %s after %.1f s: %s", outcome, what, think_s, quoted)
        elif response.status_code == 409:
            # Someone decided first (the operator in a browser), or the countdown ran out.
            self.late += 1
            detail = _toast(response)
            self.decisions.append(Decision(proposal.id, str(step), "late", detail))
            logger.info("stand-in: would %s %s, too late: %s", step, proposal.describe(), detail)
        else:
            self.errors += 1
            detail = _toast(response)
            self.decisions.append(Decision(proposal.id, str(step), "refused", detail))
            logger.warning(
                "stand-in: %s of %s answered %s: %s",
                step,
                proposal.describe(),
                response.status_code,
                detail,
            )

    # --- Music ----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _session_client(self) -> AsyncIterator[None]:
        """The running loop's client, or (when called on its own) a logged-in client of its own."""
        if self._client is not None:
            yield
            return
        async with httpx.AsyncClient(
            base_url=self.url, timeout=30.0, transport=self.transport, follow_redirects=False
        ) as client:
            self._client = client
            try:
                await self._log_in()
                yield
            finally:
                self._client = None
                self._logged_in = False

    async def music_upload(self, session_id: str, path: Path | None = None) -> MusicPanel:
        """Upload `path` (or, with None, the generated click track) as the session's music.
        Returns the panel the server answers; raises MusicRefused with the server's reason."""
        if path is None:
            name, data = CLICK_NAME, click_track()
        else:
            name, data = path.name, await asyncio.to_thread(path.read_bytes)
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        async with self._session_client():
            response = await self.client.post(
                f"/sessions/{session_id}/music/upload",
                files={"file": (name, data, content_type)},
                headers={"X-CSRFToken": self._csrf_token(), "HX-Request": "true"},
            )
            self._check(response)
        if response.status_code != 201:
            raise MusicRefused(response.status_code, _toast(response))
        panel = parse_music_panel(response.text)
        if panel is None or panel.track_id is None:
            raise MusicRefused(response.status_code, "the answer holds no music panel")
        logger.info(
            "stand-in: uploaded %s (%.1f s) to session %s", name, panel.duration_s, session_id
        )
        return panel

    async def music_cue(
        self, session_id: str, track_id: str, action: str, position_s: float
    ) -> None:
        """Post one cue, as the page's player does."""
        response = await self.client.post(
            f"/sessions/{session_id}/music/cue",
            json={
                "track_id": track_id,
                "action": action,
                "position_s": round(position_s, 3),
                "client_time": time.time(),
            },
            headers={"X-CSRFToken": self._csrf_token()},
        )
        self._check(response)
        if response.status_code != 201:
            try:
                detail = str(response.json().get("detail", ""))
            except ValueError:
                detail = response.text[:200]
            raise MusicRefused(response.status_code, detail)
        self.music_cues += 1

    async def music_play(
        self, session_id: str, path: Path | None = None, *, times: int = 1
    ) -> MusicPanel:
        """Upload `path` (None: the generated 120 BPM click track) to the session and play it
        `times` times through as an operator would, cueing each step: play from the start,
        pause a little past a third, seek back a few seconds, play on to the end (`ended`).
        The position is a simulated player's clock. Raises MusicRefused when the server
        refuses (the session ended, the track was replaced)."""
        async with self._session_client():
            panel = await self.music_upload(session_id, path)
            assert panel.track_id is not None
            for _ in range(times):
                await self._play_through(session_id, panel.track_id, panel.duration_s)
                if self.stopping.is_set():
                    break
        return panel

    async def _play_through(self, session_id: str, track_id: str, duration: float) -> None:
        pause_at = duration * self.rng.uniform(0.3, 0.45)
        resume_from = max(0.0, pause_at - self.rng.uniform(2.0, 5.0))
        await self.music_cue(session_id, track_id, "play", 0.0)
        await self.pause(pause_at)
        if self.stopping.is_set():
            return
        await self.music_cue(session_id, track_id, "pause", pause_at)
        await self.pause(self.rng.uniform(0.5, 2.0))
        await self.music_cue(session_id, track_id, "seek", resume_from)
        await self.music_cue(session_id, track_id, "play", resume_from)
        await self.pause(duration - resume_from)
        if self.stopping.is_set():
            return
        await self.music_cue(session_id, track_id, "ended", duration)

    async def _music_loop(self, session_id: str) -> None:
        """With `music`: the live session gets the track once, then it plays over and over
        until the session ends or someone replaces it."""
        try:
            panel = await self.music_upload(session_id, self.music_path)
            assert panel.track_id is not None
            while not self.stopping.is_set():
                await self.pause(MUSIC_REST_S)
                await self._play_through(session_id, panel.track_id, panel.duration_s)
        except MusicRefused as exc:
            logger.info("stand-in: the music stops: %s", exc)
        except (httpx.HTTPError, _LoggedOut, _Trouble) as exc:
            logger.info("stand-in: the music stops: %s", _describe(exc))
        except OSError as exc:
            logger.warning("stand-in: cannot read the music %s: %s", self.music_path, exc)


def click_track(
    *,
    bpm: float = CLICK_BPM,
    duration_s: float = CLICK_DURATION_S,
    sample_rate: int = CLICK_SAMPLE_RATE,
) -> bytes:
    """A metronome as a mono 16-bit WAV, encoded with PyAV in memory: a short decaying tone
    on every beat, higher and louder on the first of each bar of four. The same arguments give
    the same bytes, so `make run` needs no music file."""
    count = int(duration_s * sample_rate)
    signal = np.zeros(count, dtype=np.float64)
    click = np.arange(int(0.03 * sample_rate)) / sample_rate
    period = 60.0 / bpm
    beat = 0
    while (start := round(beat * period * sample_rate)) < count:
        accent = beat % 4 == 0
        tone = (0.8 if accent else 0.5) * np.sin(2 * np.pi * (1500.0 if accent else 1000.0) * click)
        burst = tone * np.exp(-click / 0.008)
        end = min(count, start + len(burst))
        signal[start:end] += burst[: end - start]
        beat += 1
    pcm = (np.clip(signal, -1.0, 1.0) * 32767).astype(np.int16).reshape(1, -1)
    out = io.BytesIO()
    with av.open(out, mode="w", format="wav") as container:
        stream = container.add_stream("pcm_s16le", rate=sample_rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = sample_rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()


@dataclass(frozen=True)
class MusicPanel:
    """What the session's music panel says: the current track (None when there is none)."""

    track_id: str | None
    duration_s: float
    analysis_state: str
    bpm: float | None


def parse_music_panel(fragment: str) -> MusicPanel | None:
    """The music panel's facts, or None when the fragment holds no music panel."""
    match = _MUSIC_PANEL.search(fragment)
    if match is None:
        return None
    attrs = {a["name"]: html.unescape(a["value"]) for a in _ATTR.finditer(match["attrs"])}
    bpm = _MUSIC_BPM.search(fragment)
    return MusicPanel(
        track_id=attrs.get("data-track-id") or None,
        duration_s=float(attrs.get("data-duration-s") or 0.0),
        analysis_state=attrs.get("data-analysis-state", ""),
        bpm=float(bpm["bpm"]) if bpm else None,
    )


class MusicRefused(Exception):
    """The server would not take the music or a cue; the message is its reason."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status


def _describe(exc: BaseException) -> str:
    if isinstance(exc, httpx.HTTPError):
        detail = f": {exc}" if str(exc) else ""
        return f"server not reachable ({type(exc).__name__}{detail})"
    return str(exc)
