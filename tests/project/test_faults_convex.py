"""Convex down through a whole session: every event of it arrives afterwards, in order, once.

tests/ledger/test_sync.py plays outages against `outbox_flush` in-process; this plays one
against a running server (its own sync: the embedded mode's ledger_sync child, or the scaled
mode's Celery worker), with a real session driven by an operator over HTTP and simulated
phones over the device API: start, device events, stills, stop, all while the local Convex
bridge is stopped, which is then started again on the same port and data file.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tests.project.faults_support import Operator, convex_timeline, light_fleet, server_ledger
from tests.support.bridge import running_bridge
from tests.support.server import running_server
from tests.support.waiting import until

WITHIN_S = 30.0
# After the outage, Convex is tried again when the sync's backoff says (at most 30 s).
CATCH_UP_S = 60.0


async def test_a_whole_session_recorded_while_convex_is_down_reaches_it_afterwards(
    tmp_path: Path,
) -> None:
    with running_bridge(tmp_path) as bridge:
        extra_env = bridge.env
        with running_server(tmp_path / "srv", extra_env=extra_env) as server:
            code = await asyncio.to_thread(server.pairing_code)

            fleet = light_fleet(server, code, count=2, install_prefix="convex-down")
            running = asyncio.create_task(fleet.run())
            operator = await asyncio.to_thread(
                Operator, server.url, server.username, server.password
            )
            try:
                await until(
                    lambda: all(p.beats > 0 for p in fleet.phones) or running.done(),
                    within=WITHIN_S,
                    what="both phones beat",
                )
                bridge.stop()

                session_id = await asyncio.to_thread(operator.session_create, "Convex away")
                await asyncio.to_thread(operator.session_start, session_id)
                await asyncio.to_thread(operator.capture_all)
                await until(
                    lambda: all(p.stills_uploaded >= 1 for p in fleet.phones) or running.done(),
                    within=WITHIN_S,
                    what="each phone uploaded its still",
                )
                await asyncio.to_thread(operator.session_stop, session_id)
                assert not running.done()
                fleet.stop()  # the phones unpublish and go: the session's stream is complete
                await asyncio.wait_for(running, timeout=20)

                recorded = await asyncio.to_thread(server_ledger, server, session_id)
                types = [row["type"] for row in recorded]
                assert types[:2] == ["session.created", "session.started"]
                assert types.count("still.captured") == 2
                assert "session.stopped" in types
                # Convex really was away: nothing of the session went out.
                assert {row["status"] for row in recorded} <= {"pending", "sending"}

                bridge.start()  # the same port and data file
                deadline = time.monotonic() + CATCH_UP_S
                while True:
                    final = await asyncio.to_thread(server_ledger, server, session_id)
                    done = {row["status"] for row in final} == {"synced"}
                    if done or time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.5)
                timeline = await asyncio.to_thread(convex_timeline, bridge, session_id)
            finally:
                fleet.stop()
                await asyncio.wait_for(running, timeout=20)
                await asyncio.to_thread(operator.close)

            # The outbox says all were synced, and Convex holds every event of the session
            # (those of the outage first), once each, in the session's order.
            assert {row["status"] for row in final} == {"synced"}, final
            assert final[: len(recorded)] == [{**row, "status": "synced"} for row in recorded]
            assert [row["eventId"] for row in timeline] == [row["event_id"] for row in final]
            assert [int(row["seq"]) for row in timeline] == list(range(1, len(final) + 1))
            assert [row["type"] for row in timeline][: len(types)] == types
