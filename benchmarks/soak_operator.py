"""The soak's operator side and its loops: its own HTTP requests by answer, the operator pages
on the session's socket, `Run` (the shared state of one soak), Capture all on the clock, the
pages' drain, the samples, the bare `/_ping`, the window's latencies from the database, and a
bounded wait.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from benchmarks.common import log, seconds_summary
from benchmarks.soak_config import (
    MAX_ERROR_SAMPLES,
    MB,
    PAGE_DRAIN_S,
    PING_EVERY_S,
    PING_TIMEOUT_S,
)
from benchmarks.soak_proc import Processes
from benchmarks.soak_reads import Database, db_sample
from tests.project.faults_support import LiveSocket, Operator
from tests.support.server import RunningServer

# The page's parts a push may carry (director/dom.py); a push is counted under each it carries.
PART = re.compile(
    r'id="(ghost-banner|ghost-panel|event-log|session-head|hero-area|device-cards|coverage-map'
    r"|ledger-chip|registry-summary|stills-strip|pairing-panel|music-panel"
    r'|device-[0-9a-f-]{36}-card|device-[0-9a-f-]{36}-live)"'
)


# --- The operator's side -----------------------------------------------------------------------


@dataclass
class Requests:
    """The benchmark's own HTTP requests: answers by endpoint and status."""

    by_endpoint: dict[str, Counter[str]] = field(default_factory=dict)
    # The first few refusals with what the page would have shown (the toast in HX-Trigger).
    samples: list[str] = field(default_factory=list)

    def record(self, endpoint: str, outcome: int | str, detail: str = "") -> None:
        self.by_endpoint.setdefault(endpoint, Counter())[str(outcome)] += 1
        if detail and len(self.samples) < MAX_ERROR_SAMPLES:
            self.samples.append(f"{endpoint} {outcome}: {detail}"[:300])

    def errors(self) -> dict[str, dict[str, int]]:
        """4xx, 5xx and no answer at all, by endpoint."""
        bad: dict[str, dict[str, int]] = {}
        for endpoint, outcomes in self.by_endpoint.items():
            for outcome, n in outcomes.items():
                if not outcome.isdigit() or int(outcome) >= 400:
                    bad.setdefault(endpoint, {})[outcome] = n
        return bad

    def ok(self, endpoint: str) -> int:
        outcomes = self.by_endpoint.get(endpoint, Counter())
        return sum(n for o, n in outcomes.items() if o.isdigit() and int(o) < 400)


def post(operator: Operator, requests: Requests, endpoint: str, path: str) -> int | None:
    try:
        answer = operator.post(path)
    except httpx.HTTPError as exc:
        requests.record(endpoint, type(exc).__name__, repr(exc))
        return None
    toast = answer.headers.get("HX-Trigger", "-") if answer.status_code >= 400 else ""
    requests.record(endpoint, answer.status_code, toast)
    return answer.status_code


@dataclass
class Page:
    """One operator page: its socket, and what it received, counted and let go as it comes
    (a page gets dozens of pushes a second; keeping them all would be the soak's own leak)."""

    index: int
    socket: LiveSocket
    messages: int = 0
    bytes_received: int = 0
    parts: Counter[str] = field(default_factory=Counter)

    def take(self) -> None:
        batch = list(self.socket.messages)
        self.socket.messages.clear()
        for _, text in batch:
            self.messages += 1
            self.bytes_received += len(text)
            kinds = set()
            for part in PART.findall(text):
                if part.endswith("-card"):
                    part = "device-card"
                elif part.endswith("-live"):
                    part = "live-preview"
                kinds.add(part)
            for kind in kinds or {"other"}:
                self.parts[kind] += 1

    def report(self, window: tuple[int, int], window_s: float) -> dict[str, Any]:
        return {
            "page": self.index,
            "pushes": self.messages,
            "pushes_in_window": window[1] - window[0],
            "pushes_per_s_in_window": round((window[1] - window[0]) / window_s, 2),
            "mb_received": round(self.bytes_received / MB, 2),
            "connects": len(self.socket.connects),
            "drops": len(self.socket.drops),
            "drop_reasons": [why for _, why in self.socket.drops][:10],
            "by_part": dict(self.parts.most_common()),
        }


@dataclass
class Run:
    """The shared state of one soak."""

    args: argparse.Namespace
    server: RunningServer
    processes: Processes
    db: Database
    requests: Requests = field(default_factory=Requests)
    pages: list[Page] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    phase: str = "warmup"
    stop_captures: asyncio.Event = field(default_factory=asyncio.Event)
    stop_sampling: asyncio.Event = field(default_factory=asyncio.Event)
    pings: list[tuple[str, float | None]] = field(default_factory=list)  # (phase, latency s)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def pushes(self) -> list[int]:
        for page in self.pages:
            page.take()
        return [page.messages for page in self.pages]


async def pause(event: asyncio.Event, seconds: float) -> None:
    """A sleep that ends early when `event` is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout=max(0.0, seconds))


async def capture_loop(run: Run, control: Operator) -> None:
    """Capture all every --still-every seconds, on the clock (a slow answer does not push the
    next press later), until the window ends."""
    every = run.args.still_every
    rounds = int((run.args.warmup + run.args.duration) / every) + 2
    slot = time.monotonic()
    for _ in range(rounds):
        if run.stop_captures.is_set():
            return
        await asyncio.to_thread(
            post, control, run.requests, "POST /registry/capture-all", "/registry/capture-all"
        )
        slot += every
        await pause(run.stop_captures, slot - time.monotonic())


async def drain_pages(run: Run) -> None:
    limit = int(run.args.budget_s / PAGE_DRAIN_S) + 1
    for _ in range(limit):
        run.pushes()
        await pause(run.stop_sampling, PAGE_DRAIN_S)
        if run.stop_sampling.is_set():
            return


async def take_sample(run: Run) -> dict[str, Any]:
    counts = await run.db.run(db_sample)
    sample = {
        "t_s": round(run.elapsed(), 1),
        "wall": round(time.time(), 3),
        "phase": run.phase,
        **run.processes.memory(),
        "db": counts,
        "pushes": run.pushes(),
    }
    run.samples.append(sample)
    return sample


async def ping_loop(run: Run) -> None:
    """The bare ASGI `/_ping` once a second: how long the server's event loop keeps a request
    waiting while it carries the soak (the floor of every answer it gives)."""
    limit = int(run.args.budget_s / PING_EVERY_S) + 1
    async with httpx.AsyncClient(base_url=run.server.url, timeout=PING_TIMEOUT_S) as client:
        for _ in range(limit):
            phase, started = run.phase, time.perf_counter()
            try:
                answer = await client.get("/_ping")
                latency = time.perf_counter() - started if answer.status_code == 200 else None
            except httpx.HTTPError:
                latency = None
            run.pings.append((phase, latency))
            await pause(run.stop_sampling, PING_EVERY_S)
            if run.stop_sampling.is_set():
                return


def ping_report(pings: list[tuple[str, float | None]]) -> dict[str, Any]:
    inside = [latency for phase, latency in pings if phase == "window"]
    answered = [latency for latency in inside if latency is not None]
    return {
        "every_s": PING_EVERY_S,
        "sent": len(inside),
        "failed": len(inside) - len(answered),
        **seconds_summary(answered),
    }


def db_latencies(start: float, end: float) -> dict[str, Any]:
    """From the window's rows: the phones' heartbeat round trips (their own clock, both ends),
    and how capture commands went out (lead chosen, delivery, delivered after the fire time)."""
    from datetime import UTC, datetime

    from devices.models import ClockSample, DeviceCommand

    low, high = datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(end, UTC)
    beats = ClockSample.objects.filter(at__range=(low, high))
    round_trips = [back - sent for sent, back in beats.values_list("sent_at", "returned_at")]
    captures = DeviceCommand.objects.filter(
        type=DeviceCommand.Type.CAPTURE_STILL, issued_at__range=(low, high)
    ).values_list("issued_at", "fire_at", "delivered_at")
    lead, delivery, after_fire = [], [], 0
    for issued, fire, delivered in captures:
        if fire is not None:
            lead.append((fire - issued).total_seconds())
        if delivered is not None:
            delivery.append((delivered - issued).total_seconds())
            after_fire += fire is not None and delivered > fire
    return {
        "heartbeat_round_trip_s": {"n": len(round_trips), **seconds_summary(round_trips)},
        "capture_lead_s": seconds_summary(lead),
        "capture_delivery_s": {"n": len(delivery), **seconds_summary(delivery)},
        "captures_delivered_after_fire_time": after_fire,
    }


async def sample_loop(run: Run) -> None:
    limit = int(run.args.budget_s / run.args.sample_every) + 1
    for index in range(limit):
        sample = await take_sample(run)
        if index % 3 == 0:
            db = sample["db"]
            log(
                f"  [{sample['t_s']:6.0f} s {sample['phase']:8}] server RSS "
                f"{sample['rss_mb']['server']} MB, events {db['events_recorded']} recorded / "
                f"{db['events_synced']} synced, stills {db['stills']}, pose batches "
                f"{db['pose_batches']}, proposals {db['proposals']}, online "
                f"{db['devices_online']}, pushes {sum(sample['pushes'])}"
            )
        await pause(run.stop_sampling, run.args.sample_every)
        if run.stop_sampling.is_set():
            return


async def wait_for(
    what: str, check: Callable[[], Any], *, timeout_s: float, every_s: float = 1.0
) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(every_s)
    raise TimeoutError(f"gave up waiting for {what} after {timeout_s:g} s")
