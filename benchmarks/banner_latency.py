"""Ghost banner latency: from a proposal's commit until every operator socket shows it.

It starts `manage.py serve` (tests.support.server) once per mode, each in a fresh folder of
its own: `embedded` (SQLite and the in-memory channel layer) and `scaled` (a fresh PostgreSQL
database and Redis, with the Celery worker). In each it registers three cameras through the
device API, creates and starts a session with them (Ghost supervised) and a service token,
logs an operator in and opens `--sockets` Live Director sockets on the session
(`/ws/director/sessions/<id>/`) with that login's cookie, and waits for their initial state.

Then it queues `--proposals` switch_hero proposals, one every `--pace` seconds at most, each
with a higher priority than the last so that it supersedes the one on the banner. The latency
of a proposal on a socket runs from t0 until the first message on that socket whose
`<section id="ghost-banner" ...>` carries the proposal's `data-proposal-id`:

- path `api` (both modes): `POST /api/v1/ghost/proposals` with the service token; t0 is just
  before the request is sent, so the figure includes the request's parsing, the token check
  and the transaction: an upper bound on "from the commit".
- path `direct` (scaled mode only): a helper process of this script with Django set up on the
  server's environment (its database, Redis and channel prefix) calls
  `director.ghost.proposal_create` itself, as Ghost's policies do on a Celery worker; t0 is
  stamped by an on-commit hook registered before the proposal's own, so it is the commit.
  The pushes then travel through Redis to the server's sockets.

The next proposal waits for every socket to show the last one (at most 5 s; a socket that
never does counts as missed). Per mode and path it reports p50/p95/p99/max over all sockets
and proposals, the first and the last socket of each proposal, the messages each socket got
per proposal by the parts they carried, and the server's CPU per proposal; per mode, the time
one render of banner+panel+log (what a socket renders for a Ghost event) and of the banner
alone take in the helper process.

In the same run, before the servers, it measures the floor: in this process, a
`channels_redis` RedisChannelLayer on the same Redis (a prefix of its own), `--sockets`
channels in one group, one `group_send` per round and the time until each channel's `receive`
returns (and the in-memory layer, for reference). It reports each banner p99 over the Redis
floor's p99. The aim (p99 <= 25 ms on the Redis layer) is judged on the scaled `direct` path.

    .venv/bin/python benchmarks/banner_latency.py [--sockets 20] [--proposals 60] \
        [--modes embedded,scaled] [--json PATH] [--keep]

The scaled mode uses DATABASE_URL and REDIS_URL when they are set (PostgreSQL and Redis),
otherwise postgres://postgres@127.0.0.1:5432/test and redis://127.0.0.1:6379/0; a mode whose
services do not answer is skipped with a message. Times on both sides of a process boundary
are CLOCK_MONOTONIC of the one machine (Linux). The JSON report goes to stdout (and --json
PATH); progress and the table go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import websockets

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import (  # noqa: E402
    emit_report,
    log,
    percentile,
    ratio,
    work_directory,
)
from benchmarks.machine import CpuSample, cpu_shares  # noqa: E402
from tests.support.api import register_body  # noqa: E402
from tests.support.server import RunningServer, running_server  # noqa: E402

AIM_P99_S = 0.025
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
MODES = ("embedded", "scaled")
CAMERAS = 3
WARMUP = 3
# Priorities of the API run from -100 to 100; every proposal of a mode needs a higher one.
PRIORITY_FLOOR = -100
PRIORITY_CEILING = 100
TTL_S = 120.0
# How long one proposal may take to reach every socket before it counts as missed there.
DELIVERY_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 20.0
HELPER_TIMEOUT_S = 60.0
REQUEST_TIMEOUT_S = 10.0
# After the initial state: time for the connect's own pushes to go by before measuring.
SETTLE_S = 1.0
RENDER_ROUNDS = 20
RENDERED = ("banner+panel+log", "banner")
BANNER = re.compile(r'<section id="ghost-banner"[^>]*?data-proposal-id="([0-9a-f-]{36})"')
# The page's parts a push may carry (director/dom.py); a message is classified by its set.
PART = re.compile(
    r'id="(ghost-banner|ghost-panel|event-log|session-head|hero-area|device-cards|coverage-map'
    r'|ledger-chip|registry-summary|stills-strip|pairing-panel|device-[0-9a-f-]{36}-card)"'
)
HELPER_TAG = "@@banner "
THIS_SCRIPT = str(Path(__file__).resolve())


def now() -> float:
    """CLOCK_MONOTONIC, system-wide on Linux: comparable between this process and the helper."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def summary(values: list[float]) -> dict[str, Any]:
    """p50, p95, p99, max and mean in seconds (rounded to 0.1 ms) and how many."""
    ordered = sorted(values)

    def r(value: float | None) -> float | None:
        return None if value is None else round(value, 4)

    return {
        "n": len(ordered),
        "p50": r(percentile(ordered, 50)),
        "p95": r(percentile(ordered, 95)),
        "p99": r(percentile(ordered, 99)),
        "max": r(ordered[-1] if ordered else None),
        "mean": r(sum(ordered) / len(ordered) if ordered else None),
    }


# --- Helper process: Django on the server's environment --------------------------------------


def helper_main() -> int:
    """Answer one JSON request per stdin line with one line on stdout (tagged: Django may print
    too). Runs with the server's environment, so it shares its database and channel layer."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "motionmix.settings")
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.db import transaction

    from director import ghost, service_tokens, services, session_fragments
    from director.models import PhotoshootSession
    from ledger import broadcast
    from ledger.pushes import push_loop

    # Like a Celery worker (where Ghost's policies run in the scaled mode): pushes leave from
    # one long-lived loop.
    push_loop.enable()
    stamps: dict[str, float] = {}
    push_session_events = broadcast.SessionPush.__call__

    def timed_session_push(self: broadcast.SessionPush) -> None:
        # Note when the push carrying the proposal is handed to the push loop.
        push_session_events(self)
        if "ghost.proposed" in self.event_types:
            stamps.setdefault("banner_push_sent", now())

    broadcast.SessionPush.__call__ = timed_session_push  # type: ignore[method-assign]

    def setup(request: dict[str, Any]) -> dict[str, Any]:
        operator = get_user_model().objects.get(username=request["username"])
        session = services.session_create(name="Banner latency benchmark", operator=operator)
        device_ids = [uuid.UUID(d) for d in request["device_ids"]]
        session = services.session_start(session_id=session.pk, device_ids=device_ids)
        services.session_ghost_mode_set(
            session_id=session.pk, mode=PhotoshootSession.GhostMode.SUPERVISED, by="benchmark"
        )
        _, raw = service_tokens.service_token_create(
            name=f"banner-bench-{uuid.uuid4().hex[:8]}", created_by=None
        )
        return {"session_id": str(session.pk), "hero": str(session.hero_id), "token": raw}

    def propose(request: dict[str, Any]) -> dict[str, Any]:
        stamps.clear()
        with transaction.atomic():
            # Registered before the proposal's own hooks, so it runs first at the commit.
            transaction.on_commit(lambda: stamps.setdefault("t0", now()))
            proposal = ghost.proposal_create(
                session_id=uuid.UUID(request["session_id"]),
                kind="switch_hero",
                target_ids=[uuid.UUID(request["target"])],
                payload={},
                rationale=request["rationale"],
                confidence=0.8,
                policy="benchmark",
                priority=request["priority"],
                ttl_s=TTL_S,
            )
        # The hooks ran at the commit, pushes included (sent and waited for, outside a server).
        return {
            "proposal_id": str(proposal.pk),
            "t0": stamps["t0"],
            "t_banner_push_sent": stamps.get("banner_push_sent"),
            "t_returned": now(),
        }

    def render(request: dict[str, Any]) -> dict[str, Any]:
        names = set(request["names"])
        session_fragments.parts(session_id=request["session_id"], names=names)  # warm
        times = []
        for _ in range(request["rounds"]):
            started = now()
            session_fragments.parts(session_id=request["session_id"], names=names)
            times.append(now() - started)
        return {"times": times}

    handlers = {"setup": setup, "propose": propose, "render": render}
    for line in sys.stdin:  # bounded by the parent, which closes stdin when done
        request = json.loads(line)
        if request["op"] == "quit":
            break
        try:
            answer = handlers[request["op"]](request)
        except Exception as exc:  # reported to the parent, which stops the run
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        print(HELPER_TAG + json.dumps(answer), flush=True)
    return 0


class Helper:
    """The parent's side of the helper process."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, env: dict[str, str], log_path: Path) -> Helper:
        with log_path.open("ab") as log_file:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                THIS_SCRIPT,
                "--helper",
                env=env,
                cwd=ROOT,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log_file,
            )
        return cls(proc)

    async def call(self, op: str, **request: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write((json.dumps({"op": op, **request}) + "\n").encode())
        await self.proc.stdin.drain()
        deadline = time.monotonic() + HELPER_TIMEOUT_S
        for _ in range(1000):  # Django may print other lines; a bound all the same
            remaining = deadline - time.monotonic()
            line = await asyncio.wait_for(self.proc.stdout.readline(), max(remaining, 0.01))
            if not line:
                raise RuntimeError(f"the helper exited (code {self.proc.returncode}) during {op}")
            text = line.decode()
            if text.startswith(HELPER_TAG):
                answer = json.loads(text[len(HELPER_TAG) :])
                if "error" in answer:
                    raise RuntimeError(f"helper {op}: {answer['error']}")
                return dict(answer)
        raise RuntimeError(f"the helper printed too much without answering {op}")

    async def stop(self) -> None:
        if self.proc.returncode is not None:
            return
        with contextlib.suppress(Exception):
            assert self.proc.stdin is not None
            self.proc.stdin.write(b'{"op": "quit"}\n')
            await self.proc.stdin.drain()
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            self.proc.kill()
            await asyncio.wait_for(self.proc.wait(), 5)


# --- Operator sockets ------------------------------------------------------------------------


def operator_cookie(url: str, username: str, password: str) -> str:
    """Log in through the login form, as a person would; returns the session cookie."""
    with httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT_S) as client:
        page = client.get("/accounts/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        if token is None:
            raise RuntimeError("the login page has no CSRF token")
        answer = client.post(
            "/accounts/login/",
            data={
                "username": username,
                "password": password,
                "csrfmiddlewaretoken": token.group(1),
            },
        )
        if answer.status_code != 302 or "sessionid" not in client.cookies:
            raise RuntimeError(f"logging in answered {answer.status_code}")
        return str(client.cookies["sessionid"])


@dataclass
class Tracker:
    """When each socket first showed each proposal on its banner."""

    sockets: int
    seen: list[dict[str, float]] = field(default_factory=list)
    initial: list[asyncio.Event] = field(default_factory=list)
    messages: list[int] = field(default_factory=list)
    bytes_received: int = 0
    # How many messages (all sockets) carried each set of parts, e.g. "event-log+ghost-banner".
    kinds: Counter[str] = field(default_factory=Counter)
    waiting: dict[str, asyncio.Event] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.seen = [{} for _ in range(self.sockets)]
        self.initial = [asyncio.Event() for _ in range(self.sockets)]
        self.messages = [0] * self.sockets

    def everywhere(self, proposal_id: str) -> bool:
        return all(proposal_id in seen for seen in self.seen)

    async def watch(self, index: int, socket: Any) -> None:
        async for message in socket:
            at = now()
            text = message if isinstance(message, str) else message.decode()
            self.messages[index] += 1
            self.bytes_received += len(text)
            parts = {"device-card" if p.startswith("device-") else p for p in PART.findall(text)}
            self.kinds["+".join(sorted(parts)) or "other"] += 1
            for proposal_id in BANNER.findall(text):
                if proposal_id not in self.seen[index]:
                    self.seen[index][proposal_id] = at
                    event = self.waiting.get(proposal_id)
                    if event is not None and self.everywhere(proposal_id):
                        event.set()
            if 'id="ghost-banner"' in text:
                self.initial[index].set()

    async def wait_everywhere(self, proposal_id: str, within_s: float) -> bool:
        if self.everywhere(proposal_id):
            return True
        event = self.waiting.setdefault(proposal_id, asyncio.Event())
        try:
            await asyncio.wait_for(event.wait(), within_s)
            return True
        except TimeoutError:
            return False
        finally:
            self.waiting.pop(proposal_id, None)


# --- One path: queue proposals, time the banners ---------------------------------------------


@dataclass
class Sent:
    proposal_id: str
    t0: float
    answered: float | None = None  # the API's answer (path api)
    # Path direct: the banner's push (ghost.proposed) sent to Redis; proposal_create returned
    # (every on-commit push sent).
    banner_push_sent: float | None = None
    returned: float | None = None


@dataclass
class Context:
    server: RunningServer
    helper: Helper
    tracker: Tracker
    session_id: str
    token: str
    targets: list[str]
    priority: int = PRIORITY_FLOOR

    def next_priority(self) -> int:
        self.priority += 1
        return self.priority


async def propose_api(ctx: Context, client: Any, index: int) -> Sent:
    body = {
        "session_id": ctx.session_id,
        "kind": "switch_hero",
        "targets": [ctx.targets[index % len(ctx.targets)]],
        "payload": {},
        "rationale": f"Benchmark proposal {index}: put this camera on air.",
        "confidence": 0.8,
        "priority": ctx.next_priority(),
        "ttl_s": TTL_S,
    }
    t0 = now()
    answer = await client.post(
        "/api/v1/ghost/proposals",
        json=body,
        headers={"Authorization": f"Bearer {ctx.token}"},
    )
    answered = now()
    if answer.status_code != 201:
        raise RuntimeError(
            f"POST /api/v1/ghost/proposals answered {answer.status_code}: {answer.text[:300]}"
        )
    return Sent(proposal_id=answer.json()["proposal_id"], t0=t0, answered=answered)


async def propose_direct(ctx: Context, index: int) -> Sent:
    answer = await ctx.helper.call(
        "propose",
        session_id=ctx.session_id,
        target=ctx.targets[index % len(ctx.targets)],
        priority=ctx.next_priority(),
        rationale=f"Benchmark proposal {index}: put this camera on air.",
    )
    return Sent(
        proposal_id=answer["proposal_id"],
        t0=answer["t0"],
        banner_push_sent=answer["t_banner_push_sent"],
        returned=answer["t_returned"],
    )


async def run_path(ctx: Context, path: str, args: argparse.Namespace) -> dict[str, Any]:
    sent: list[Sent] = []
    delivered_everywhere = 0
    async with httpx.AsyncClient(base_url=ctx.server.url, timeout=REQUEST_TIMEOUT_S) as client:

        async def one(index: int) -> Sent:
            if path == "api":
                return await propose_api(ctx, client, index)
            return await propose_direct(ctx, index)

        for index in range(WARMUP):
            warm = await one(index)
            await ctx.tracker.wait_everywhere(warm.proposal_id, DELIVERY_TIMEOUT_S)
            await asyncio.sleep(args.pace)
        log(f"  {path}: {args.proposals} proposals, one every {args.pace} s at most ...")
        before, client_cpu = CpuSample.take(ctx.server), time.process_time()
        messages_before = sum(ctx.tracker.messages)
        kinds_before = Counter(ctx.tracker.kinds)
        started = now()
        for index in range(WARMUP, WARMUP + args.proposals):
            slot = now() + args.pace
            proposal = await one(index)
            sent.append(proposal)
            delivered_everywhere += await ctx.tracker.wait_everywhere(
                proposal.proposal_id, DELIVERY_TIMEOUT_S
            )
            await asyncio.sleep(max(0.0, slot - now()))
        elapsed = now() - started
        after, client_cpu = CpuSample.take(ctx.server), time.process_time() - client_cpu
        messages = sum(ctx.tracker.messages) - messages_before
        kinds = ctx.tracker.kinds - kinds_before

    latencies: list[float] = []
    first: list[float] = []
    last: list[float] = []
    missed = 0
    for proposal in sent:
        times = [s[proposal.proposal_id] for s in ctx.tracker.seen if proposal.proposal_id in s]
        missed += ctx.tracker.sockets - len(times)
        latencies += [t - proposal.t0 for t in times]
        if times:
            first.append(min(times) - proposal.t0)
            last.append(max(times) - proposal.t0)
    result: dict[str, Any] = {
        "proposals": len(sent),
        "samples": len(latencies),
        "missed": missed,
        "proposals_seen_everywhere": delivered_everywhere,
        "elapsed_s": round(elapsed, 3),
        "proposals_per_s": round(len(sent) / elapsed, 2),
        "latency_s": summary(latencies),
        "first_socket_s": summary(first),
        "last_socket_s": summary(last),
        # Pushes of every kind (banner, log, cards, ledger chip) each socket got per proposal.
        "messages_per_socket_per_proposal": round(
            messages / max(len(sent), 1) / ctx.tracker.sockets, 2
        ),
        # The same by what the messages carried.
        "messages_per_socket_per_proposal_by_parts": {
            name: round(count / max(len(sent), 1) / ctx.tracker.sockets, 2)
            for name, count in kinds.most_common()
        },
        "cpu_pct_of_one_core": cpu_shares(before, after, client_cpu),
        # The server's CPU (Daphne and, scaled, the Celery worker) per proposal: the work the
        # sockets' renders add up to, whatever the rest of the machine was doing.
        "server_cpu_ms_per_proposal": round(
            1000 * (after.server - before.server + after.helpers - before.helpers) / len(sent), 1
        ),
    }
    if path == "api":
        result["api_answer_s"] = summary([p.answered - p.t0 for p in sent if p.answered])
    else:
        pushed = [p for p in sent if p.banner_push_sent is not None]
        result["commit_to_banner_push_sent_s"] = summary(
            [p.banner_push_sent - p.t0 for p in pushed]
        )
        result["banner_push_sent_to_last_socket_s"] = summary(
            [
                max(s[p.proposal_id] for s in ctx.tracker.seen if p.proposal_id in s)
                - p.banner_push_sent
                for p in pushed
                if any(p.proposal_id in s for s in ctx.tracker.seen)
            ]
        )
        result["commit_to_all_pushes_sent_s"] = summary(
            [p.returned - p.t0 for p in sent if p.returned]
        )
    return result


# --- One mode: a server, its cameras, session, sockets ---------------------------------------


async def register_cameras(url: str, code: str) -> list[str]:
    ids = []
    async with httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT_S) as client:
        for index in range(CAMERAS):
            body = register_body(
                code, install_id=f"bench-banner-{index}", name=f"Banner cam {index + 1}"
            )
            answer = await client.post("/api/v1/devices/register", json=body)
            if answer.status_code not in (200, 201):
                raise RuntimeError(f"registering camera {index} answered {answer.status_code}")
            ids.append(answer.json()["device_id"])
    return ids


async def measure_mode(
    server: RunningServer, mode: str, args: argparse.Namespace
) -> dict[str, Any]:
    code = await asyncio.to_thread(server.pairing_code)
    device_ids = await register_cameras(server.url, code)
    helper = await Helper.start(server.env, server.workdir / "helper.log")
    try:
        setup = await helper.call("setup", username=server.username, device_ids=device_ids)
        cookie = await asyncio.to_thread(
            operator_cookie, server.url, server.username, server.password
        )
        tracker = Tracker(args.sockets)
        ctx = Context(
            server=server,
            helper=helper,
            tracker=tracker,
            session_id=setup["session_id"],
            token=setup["token"],
            # Every camera but the one on air, in turn: each banner names another camera.
            targets=[d for d in device_ids if d != setup["hero"]],
        )
        ws_url = f"ws://127.0.0.1:{server.port}/ws/director/sessions/{ctx.session_id}/"
        log(f"  opening {args.sockets} operator sockets on session {ctx.session_id} ...")
        paths: dict[str, Any] = {}
        async with contextlib.AsyncExitStack() as stack:
            watchers = []
            for index in range(args.sockets):
                socket = await stack.enter_async_context(
                    websockets.connect(
                        ws_url,
                        additional_headers={"Cookie": f"sessionid={cookie}", "Origin": server.url},
                        max_size=8 * 1024 * 1024,
                        open_timeout=CONNECT_TIMEOUT_S,
                    )
                )
                watchers.append(asyncio.create_task(tracker.watch(index, socket)))
            try:
                await asyncio.wait_for(
                    asyncio.gather(*(event.wait() for event in tracker.initial)),
                    CONNECT_TIMEOUT_S,
                )
                await asyncio.sleep(SETTLE_S)
                paths["api"] = await run_path(ctx, "api", args)
                if mode == "scaled":
                    paths["direct"] = await run_path(ctx, "direct", args)
            finally:
                for task in watchers:
                    task.cancel()
                for task in watchers:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
        # What one socket renders for a ghost event, and the banner alone, in the helper
        # process (the server renders the same, once per socket), with the last proposal on
        # the banner.
        renders = {}
        for names in RENDERED:
            answer = await helper.call(
                "render", session_id=ctx.session_id, names=names.split("+"), rounds=RENDER_ROUNDS
            )
            renders[names] = summary(answer["times"])
    finally:
        await helper.stop()
    return {
        "cameras": len(device_ids),
        "session_id": ctx.session_id,
        "paths": paths,
        "render_in_process_s": renders,
        "socket_messages": sum(tracker.messages),
        "socket_mb": round(tracker.bytes_received / 1e6, 2),
    }


def mode_env(mode: str) -> dict[str, str]:
    if mode == "embedded":
        # Empty is unset for the settings and for running_server.
        return {"DATABASE_URL": "", "REDIS_URL": ""}
    return {"DATABASE_URL": scaled_database_url(), "REDIS_URL": scaled_redis_url()}


def scaled_database_url() -> str:
    url = os.environ.get("DATABASE_URL", "")
    return url if url.startswith(("postgres://", "postgresql://")) else DEFAULT_DATABASE_URL


def scaled_redis_url() -> str:
    url = os.environ.get("REDIS_URL", "")
    return url if url.startswith(("redis://", "rediss://")) else DEFAULT_REDIS_URL


def redis_unreachable(url: str) -> str | None:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
        client.ping()
        client.close()
    except Exception as exc:
        return f"Redis at {url} does not answer: {type(exc).__name__}: {exc}"
    return None


def postgres_unreachable(url: str) -> str | None:
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        return f"PostgreSQL at {url} does not answer: {type(exc).__name__}: {exc}"
    return None


def run_mode(mode: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    env = mode_env(mode)
    described = {
        "embedded": {"database": "sqlite", "channel_layer": "in-memory"},
        "scaled": {"database": "postgresql", "channel_layer": "redis"},
    }[mode]
    if mode == "scaled":
        reason = postgres_unreachable(env["DATABASE_URL"]) or redis_unreachable(env["REDIS_URL"])
        if reason is not None:
            log(f"Skipping the scaled mode: {reason}")
            return {"status": "skipped", "reason": reason, **described}
    folder = workdir / mode
    folder.mkdir()
    extra_env = {
        **env,
        # No camera beats: they stay online (3 missed beats) for the whole run without any.
        "MOTIONMIX_HEARTBEAT_INTERVAL_S": "600",
        # Ghost's own policies would put their proposals (priority 10-50) on the banner.
        "MOTIONMIX_GHOST_POLICY_INTERVAL_S": "86400",
    }
    log(f"Starting the server ({mode} mode) in {folder} ...")
    with running_server(folder, extra_env=extra_env) as server:
        result = asyncio.run(measure_mode(server, mode, args))
    return {"status": "ok", **described, **result}


# --- Floor: the channel layer alone ----------------------------------------------------------


async def layer_floor(layer: Any, *, fanout: int, rounds: int, pace_s: float) -> dict[str, Any]:
    """`fanout` channels in one group; per round one group_send and the time until each
    channel's receive returns."""
    group = "banner-floor"
    channels = [await layer.new_channel() for _ in range(fanout)]
    for channel in channels:
        await layer.group_add(group, channel)
    latencies: list[float] = []
    missed = 0
    try:

        async def receive(channel: str) -> float:
            await layer.receive(channel)
            return now()

        for index in range(WARMUP + rounds):
            receivers = [asyncio.create_task(receive(c)) for c in channels]
            await asyncio.sleep(0)  # let them start waiting
            t0 = now()
            await layer.group_send(
                group,
                {
                    "type": "session.events",
                    "event_types": ["ghost.proposed"],
                    "last_seq": index,
                    "committed_at": time.time(),
                },
            )
            done, pending = await asyncio.wait(receivers, timeout=DELIVERY_TIMEOUT_S)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
            if index >= WARMUP:
                missed += len(pending)
                latencies += [task.result() - t0 for task in done]
            await asyncio.sleep(pace_s)
    finally:
        for channel in channels:
            await layer.group_discard(group, channel)
    return {"fanout": fanout, "rounds": rounds, "missed": missed, "latency_s": summary(latencies)}


def measure_floors(args: argparse.Namespace) -> dict[str, Any]:
    from channels.layers import InMemoryChannelLayer

    floors: dict[str, Any] = {}
    url = scaled_redis_url()
    reason = redis_unreachable(url)
    if reason is None:
        from channels_redis.core import RedisChannelLayer

        async def redis_floor() -> dict[str, Any]:
            layer = RedisChannelLayer(
                hosts=[url], prefix=f"mmbench-floor-{os.getpid()}", capacity=1000
            )
            try:
                return await layer_floor(
                    layer, fanout=args.sockets, rounds=args.proposals, pace_s=0.05
                )
            finally:
                await layer.flush()
                await layer.close_pools()

        log(f"Floor: channels_redis group_send to {args.sockets} channels on {url} ...")
        floors["redis"] = {"status": "ok", "url": url, **asyncio.run(redis_floor())}
    else:
        log(f"Skipping the Redis floor: {reason}")
        floors["redis"] = {"status": "skipped", "reason": reason}
    floors["in_memory"] = {
        "status": "ok",
        **asyncio.run(
            layer_floor(
                InMemoryChannelLayer(capacity=1000),
                fanout=args.sockets,
                rounds=args.proposals,
                pace_s=0.01,
            )
        ),
    }
    return floors


# --- Report ----------------------------------------------------------------------------------


def p99(block: dict[str, Any] | None) -> float | None:
    if not block or block.get("status") == "skipped":
        return None
    return block["latency_s"]["p99"]


def build_report(
    args: argparse.Namespace,
    modes: dict[str, Any],
    floors: dict[str, Any],
    load_before: tuple[float, float, float],
) -> dict[str, Any]:
    floor_p99 = p99(floors.get("redis"))
    ratios: dict[str, float | None] = {}
    for mode, result in modes.items():
        for path, block in (result.get("paths") or {}).items():
            block["p99_vs_redis_floor_p99"] = ratio(p99(block), floor_p99)
            ratios[f"{mode}_{path}"] = block["p99_vs_redis_floor_p99"]
    scaled = (modes.get("scaled") or {}).get("paths") or {}
    # The figure: from proposal_create's commit, on the Redis layer.
    judged = scaled.get("direct")
    judged_p99 = p99(judged)
    met = (
        judged is not None
        and judged_p99 is not None
        and judged_p99 <= AIM_P99_S
        and judged["missed"] == 0
    )
    return {
        "benchmark": "banner_latency",
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "loadavg_before": [round(x, 2) for x in load_before],
        },
        "sockets": args.sockets,
        "proposals": args.proposals,
        "warmup": WARMUP,
        "pace_s": args.pace,
        "kind": "switch_hero",
        "modes": modes,
        "floor": floors,
        "ratios_p99_vs_redis_floor": ratios,
        "aim": {
            "p99_s": AIM_P99_S,
            "judged_on": "scaled.direct (proposal_create commit, Redis layer)",
            "p99_measured_s": judged_p99,
            "met": met,
            "api_p99_s": p99(scaled.get("api")),
        },
    }


def render_table(report: dict[str, Any]) -> str:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value * 1000:.1f}"

    header = ("", "p50 ms", "p95 ms", "p99 ms", "max ms", "samples", "missed", "p99/floor")
    rows: list[tuple[str, ...]] = [header]
    spreads = []
    for mode, result in report["modes"].items():
        if result["status"] != "ok":
            rows.append((f"{mode}: skipped", "", "", "", "", "", "", ""))
            continue
        for path, block in result["paths"].items():
            lat = block["latency_s"]
            rows.append(
                (
                    f"{mode} {path} ({result['database']}, {result['channel_layer']})",
                    ms(lat["p50"]),
                    ms(lat["p95"]),
                    ms(lat["p99"]),
                    ms(lat["max"]),
                    str(block["samples"]),
                    str(block["missed"]),
                    "-"
                    if block["p99_vs_redis_floor_p99"] is None
                    else f"{block['p99_vs_redis_floor_p99']:.1f}x",
                )
            )
            extra = (
                f"API answer p50 {ms(block['api_answer_s']['p50'])} ms"
                if "api_answer_s" in block
                else f"commit to banner push sent p50 "
                f"{ms(block['commit_to_banner_push_sent_s']['p50'])} ms, to all pushes sent "
                f"{ms(block['commit_to_all_pushes_sent_s']['p50'])} ms"
            )
            spreads.append(
                f"{mode} {path}: first socket p50 {ms(block['first_socket_s']['p50'])} ms, "
                f"last socket p50 {ms(block['last_socket_s']['p50'])} / p99 "
                f"{ms(block['last_socket_s']['p99'])} ms; {extra}; "
                f"{block['messages_per_socket_per_proposal']} messages per socket and proposal; "
                f"{block['proposals_per_s']} proposals/s; server CPU per proposal "
                f"{block['server_cpu_ms_per_proposal']} ms; CPU % of a core "
                + ", ".join(f"{k} {v}" for k, v in block["cpu_pct_of_one_core"].items())
            )
    for name, floor in report["floor"].items():
        if floor["status"] != "ok":
            rows.append((f"floor {name}: skipped", "", "", "", "", "", "", ""))
            continue
        lat = floor["latency_s"]
        rows.append(
            (
                f"floor: {name} layer group_send, {floor['fanout']} channels",
                ms(lat["p50"]),
                ms(lat["p95"]),
                ms(lat["p99"]),
                ms(lat["max"]),
                str(lat["n"]),
                str(floor["missed"]),
                "",
            )
        )
    for mode, result in report["modes"].items():
        if result["status"] != "ok":
            continue
        for names, lat in result["render_in_process_s"].items():
            rows.append(
                (
                    f"render {names} once ({mode}, in process)",
                    ms(lat["p50"]),
                    ms(lat["p95"]),
                    ms(lat["p99"]),
                    ms(lat["max"]),
                    str(lat["n"]),
                    "",
                    "",
                )
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    machine = report["machine"]
    lines = [
        f"Ghost banner latency: {report['sockets']} operator sockets on one session, "
        f"{report['proposals']} switch_hero proposals per path (after {report['warmup']} "
        f"unmeasured), {machine['cores']} cores, load average before "
        f"{machine['loadavg_before'][0]}",
        "",
    ]
    lines += [
        "  ".join(v.ljust(widths[0]) if i == 0 else v.rjust(widths[i]) for i, v in enumerate(row))
        for row in rows
    ]
    lines += ["", *spreads]
    for mode, result in report["modes"].items():
        if result["status"] != "ok":
            lines.append(f"{mode}: skipped: {result['reason']}")
    aim = report["aim"]
    lines += [
        "",
        f"Aim: p99 <= {aim['p99_s'] * 1000:.0f} ms on the Redis layer, from proposal_create's "
        f"commit (scaled direct: {ms(aim['p99_measured_s'])} ms): "
        + ("MET" if aim["met"] else "NOT MET"),
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sockets", type=int, default=20, help="Operator sockets on the session.")
    parser.add_argument(
        "--proposals", type=int, default=60, help="Measured proposals per mode and path."
    )
    parser.add_argument(
        "--pace",
        type=float,
        default=0.15,
        metavar="S",
        help="At most one proposal every S seconds; the next also waits until every socket "
        f"showed the last (or {DELIVERY_TIMEOUT_S:g} s passed).",
    )
    parser.add_argument(
        "--modes", default=",".join(MODES), help="Comma-separated: embedded, scaled."
    )
    parser.add_argument("--json", type=Path, default=None, help="Also write the JSON here.")
    parser.add_argument("--keep", action="store_true", help="Keep the work directory (logs).")
    args = parser.parse_args(argv)
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not args.modes or any(m not in MODES for m in args.modes):
        parser.error(f"--modes takes a comma-separated list of {', '.join(MODES)}")
    # Both paths of a mode share one priority ladder of the API's -100..100.
    most = (PRIORITY_CEILING - PRIORITY_FLOOR) // 2 - WARMUP
    if not 1 <= args.sockets <= 200 or not 1 <= args.proposals <= most:
        parser.error(f"--sockets must be 1..200 and --proposals 1..{most}")
    if not 0 < args.pace <= 10:
        parser.error("--pace must be more than 0 and at most 10 seconds")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--helper"]:
        return helper_main()
    args = parse_args(argv)
    load_before = os.getloadavg()
    floors = measure_floors(args)
    modes: dict[str, Any] = {}
    with work_directory(keep=args.keep, prefix="mm-banner-") as workdir:
        for mode in args.modes:
            modes[mode] = run_mode(mode, args, workdir)
    report = build_report(args, modes, floors, load_before)
    emit_report(report, json_path=args.json, table=render_table(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
