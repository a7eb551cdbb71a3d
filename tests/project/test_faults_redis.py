"""Redis restarted during a live session: the operator's page reconnects and resyncs, and no
event is lost.

The scaled mode on a Redis of the test's own (a private redis-server on a free port, without
persistence, as a crashed Redis comes back: empty), so the shared one is never touched. While
Redis is away the phone keeps beating, changes lens and uploads a still, the operator acts:
each of those is answered and recorded. The operator's socket drops and is refused until
Redis is back; then it reconnects, its first messages are the whole page again (the outage's
still in the strip), pushes flow again, and every event of the outage is in the ledger and
synced to Convex.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.project.faults_support import (
    LiveSocket,
    Operator,
    convex_timeline,
    light_fleet,
    server_ledger,
)
from tests.support.bridge import running_bridge
from tests.support.requirements import missing, require_redis
from tests.support.server import free_port, running_server
from tests.support.waiting import until

WITHIN_S = 30.0
# The page's whole state, as the session socket sends it on connect (director/consumers.py).
RESYNC_PARTS = ('id="session-head"', 'id="event-log"', 'id="ghost-banner"', 'id="stills-strip"')


class PrivateRedis:
    def __init__(self, port: int, workdir: Path) -> None:
        self.port = port
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            missing("redis-server is not installed")
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--daemonize", "no", "--dir", str(self.workdir)]
        with (self.workdir / "redis.log").open("ab") as log:
            self.proc = subprocess.Popen([binary, *args], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn,
            ):
                conn.sendall(b"PING\r\n")
                if conn.recv(16).startswith(b"+PONG"):
                    return
            time.sleep(0.05)
        raise TimeoutError(f"redis-server on {self.port} did not answer; see {self.workdir}")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    require_redis()  # the scaled pass; the embedded mode has no Redis to lose
    redis = PrivateRedis(free_port(), tmp_path)
    redis.start()
    try:
        yield redis
    finally:
        redis.kill()


async def test_redis_restarted_mid_session_pages_resync_and_no_event_is_lost(
    private_redis: PrivateRedis, tmp_path: Path
) -> None:
    with running_bridge(tmp_path / "bridge") as bridge:
        extra_env = {"REDIS_URL": private_redis.url, **bridge.env}
        with running_server(tmp_path / "srv", extra_env=extra_env) as server:
            code = await asyncio.to_thread(server.pairing_code)

            fleet = light_fleet(server, code, count=1, install_prefix="redis-down")
            phone = fleet.phones[0]
            running = asyncio.create_task(fleet.run())
            operator = await asyncio.to_thread(
                Operator, server.url, server.username, server.password
            )
            page: LiveSocket | None = None
            try:
                await until(lambda: phone.beats > 0, within=WITHIN_S, what="the phone beats")
                session_id = await asyncio.to_thread(operator.session_create, "Redis away")
                await asyncio.to_thread(operator.session_start, session_id)
                page = LiveSocket(
                    server.url, f"/ws/director/sessions/{session_id}/", operator.cookie
                )
                page.start()
                await until(
                    lambda: any('id="event-log"' in text for _, text in page.messages),
                    within=WITHIN_S,
                    what="the page's first state",
                )
                before = len(await asyncio.to_thread(server_ledger, server, session_id))

                private_redis.kill()
                await until(lambda: len(page.drops) > 0, within=WITHIN_S, what="the socket drops")

                # The outage: the phone beats on, the operator changes its lens and captures.
                beats = phone.beats
                answer = await asyncio.to_thread(
                    operator.post, f"/registry/devices/{phone.device_id}/lens", {"zoom": "0.5"}
                )
                assert answer.status_code == 200, answer.text
                answer = await asyncio.to_thread(
                    operator.post, f"/registry/devices/{phone.device_id}/capture"
                )
                assert answer.status_code == 200, answer.text
                await until(
                    lambda: phone.lens == "ultra_wide" and phone.stills_uploaded == 1,
                    within=WITHIN_S,
                    what="the lens change and the still carried out while Redis is away",
                )
                await until(lambda: phone.beats >= beats + 2, within=WITHIN_S, what="beats")
                still_id = phone.captures[-1].still_id
                assert still_id is not None
                during = await asyncio.to_thread(server_ledger, server, session_id)
                outage_types = [row["type"] for row in during[before:]]
                assert "still.captured" in outage_types, outage_types
                assert len(page.connects) == 1  # refused while Redis is away

                private_redis.start()  # the same port, empty
                await until(
                    lambda: len(page.connects) >= 2, within=WITHIN_S, what="the page reconnects"
                )
                resync_from = page.connects[-1]
                await until(
                    lambda: all(
                        any(part in text for text in page.since(resync_from))
                        for part in RESYNC_PARTS
                    ),
                    within=WITHIN_S,
                    what="the whole page sent again on reconnect",
                )
                resync = "".join(page.since(resync_from))
                assert still_id in resync  # the outage's still is on the page now

                # Pushes flow again: a change after the restart reaches the open socket.
                pushed_from = time.monotonic()
                await asyncio.to_thread(operator.ghost_mode, session_id, "off")
                await until(
                    lambda: any(
                        'data-ghost-mode="off"' in text for text in page.since(pushed_from)
                    ),
                    within=WITHIN_S,
                    what="a push after the restart",
                )

                # Nothing was lost: every event (the outage's too) is synced to Convex.
                deadline = time.monotonic() + 60
                while True:
                    final = await asyncio.to_thread(server_ledger, server, session_id)
                    synced = {row["status"] for row in final} == {"synced"}
                    if synced or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.5)
                assert synced, final
                assert final[: len(during)] == [{**row, "status": "synced"} for row in during]
                timeline = await asyncio.to_thread(convex_timeline, bridge, session_id)
                assert [row["eventId"] for row in timeline] == [row["event_id"] for row in final]
            finally:
                if page is not None:
                    await page.stop()
                fleet.stop()
                await asyncio.wait_for(running, timeout=20)
                await asyncio.to_thread(operator.close)
