"""End-to-end check of the bridge with the real Python `convex` client (ConvexHttpClient).

Run it with a Python that has the client (`pip install convex==0.8.1`) and with
`npm ci` done in convex/:

    python convex/bridge/python_client_check.py

It starts the bridge on a free port with a data file and an admin key of its own, checks that
a client without the key, or with a wrong one, is told the functions do not exist, calls the
ledger functions with the key the way the Celery sync does, checks whole numbers come back as
floats, that a bad argument raises the client's error with the path of the bad value, and that
the data survives a restart.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path

# http_client re-exports the package's ConvexError; importing all three from it keeps one import.
from convex.http_client import ConvexError, ConvexExecutionError, ConvexHttpClient

BRIDGE = Path(__file__).resolve().parent / "main.mjs"
SESSION = "5f0c8a52-9d7e-4a8b-9a55-1f1f0e4b2c01"
# The bridge's admin key for this run, handed over in its environment (never on its command
# line, which `ps` shows); the same key across the restart, as a deployment's stays.
ADMIN_KEY = secrets.token_urlsafe(32)
NOT_FOUND = "Could not find public function for 'production:appendEvents'"


def start_bridge(data_file: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
        ["node", str(BRIDGE), "--port", "0", "--data", str(data_file)],  # noqa: S607
        stdout=subprocess.PIPE,
        stderr=sys.stderr,
        text=True,
        env={**os.environ, "CONVEX_BRIDGE_ADMIN_KEY": ADMIN_KEY},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    prefix = "convex-bridge listening on "
    if not line.startswith(prefix):
        proc.kill()
        raise RuntimeError(f"bridge did not start: {line!r}")
    return proc, line.removeprefix(prefix)


def stop_bridge(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    assert proc.wait(timeout=10) == 0, "the bridge should exit 0 on SIGTERM"


def event(seq: int) -> dict[str, object]:
    return {
        "eventId": f"evt-{seq}",
        "sessionId": SESSION,
        "stream": f"session-{SESSION}",
        "seq": seq,  # a Python int: the client sends it as 1.0
        "type": "device.online",
        "occurredAt": 1_760_000_000 + seq,  # whole unix seconds, also an int
        "deviceId": None,
        "payload": {"offline_for_s": 12, "ratio": 0.5},
    }


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data_file = Path(tmp) / "ledger.json"
        proc, url = start_bridge(data_file)
        try:
            # The ledger's functions are internal: without the admin key, or with another,
            # the bridge answers as a deployment does, as if they did not exist.
            for key in (None, "local-bridge|not-its-admin-key"):
                stranger = ConvexHttpClient(url)
                if key is not None:
                    stranger.set_admin_auth(key)
                try:
                    stranger.mutation("production:appendEvents", {"events": [event(99)]})
                except ConvexExecutionError as error:
                    assert NOT_FOUND in str(error), error
                else:
                    raise AssertionError("a call without the admin key should be refused")
            print("without the admin key ->", NOT_FOUND)

            client = ConvexHttpClient(url)
            # As the sync does with CONVEX_DEPLOY_KEY.
            client.set_admin_auth(ADMIN_KEY)

            result = client.mutation(
                "production:appendEvents", {"events": [event(3), event(1), event(2)]}
            )
            assert result == {"inserted": 3.0, "duplicates": 0.0}, result
            assert isinstance(result["inserted"], float)

            replay = client.mutation(
                "production:appendEvents", {"events": [event(1), event(2), event(3)]}
            )
            assert replay == {"inserted": 0.0, "duplicates": 3.0}, replay

            timeline = client.query("production:sessionTimeline", {"sessionId": SESSION})
            assert [e["seq"] for e in timeline] == [1.0, 2.0, 3.0], timeline
            first = timeline[0]
            assert isinstance(first["seq"], float)
            assert first["occurredAt"] == 1_760_000_001.0
            assert first["payload"] == {"offline_for_s": 12.0, "ratio": 0.5}
            assert "deviceId" not in first

            after = client.query(
                "production:sessionTimeline", {"sessionId": SESSION, "afterSeq": 1, "limit": 1}
            )
            assert [e["seq"] for e in after] == [2.0], after

            upsert = client.mutation(
                "production:upsertSession",
                {
                    "sessionId": SESSION,
                    "name": "Spring lookbook",
                    "status": "live",
                    "operator": "ada",
                    "startedAt": 1_760_000_000,
                    "updatedAt": 1_760_000_000.5,
                },
            )
            assert upsert == {"sessionId": SESSION, "result": "inserted"}, upsert

            try:
                client.mutation(
                    "production:appendEvents", {"events": [{**event(4), "seq": "four"}]}
                )
            except ConvexExecutionError as error:
                message = str(error)
                assert "ArgumentValidationError" in message, message
                assert "Path: .events[0].seq" in message, message
                print("invalid argument ->", message.replace("\n", " | "))
            else:
                raise AssertionError("a string seq should be refused")

            try:
                client.mutation(
                    "production:appendEvents", {"events": [event(i) for i in range(10, 111)]}
                )
            except ConvexError as error:
                assert "at most 100 events per call, got 101" in str(error), error
                assert error.data == str(error)
                print("batch of 101 ->", error)
            else:
                raise AssertionError("a batch of 101 should be refused")
        finally:
            stop_bridge(proc)

        proc, url = start_bridge(data_file)
        try:
            client = ConvexHttpClient(url)
            client.set_admin_auth(ADMIN_KEY)
            summary = client.query("production:sessionSummary", {"sessionId": SESSION})
            assert summary["eventCount"] == 3.0, summary
            assert (summary["firstSeq"], summary["lastSeq"]) == (1.0, 3.0), summary
            assert summary["countsByType"] == {"device.online": 3.0}, summary
            assert summary["session"]["status"] == "live", summary
            assert summary["session"]["startedAt"] == 1_760_000_000.0, summary
            # The refused calls of the first run stored nothing.
            assert "evt-99" not in {
                e["eventId"]
                for e in client.query("production:sessionTimeline", {"sessionId": SESSION})
            }
            again = client.mutation("production:appendEvents", {"events": [event(1)]})
            assert again == {"inserted": 0.0, "duplicates": 1.0}, again
        finally:
            stop_bridge(proc)
    print("python client check: ok")


if __name__ == "__main__":
    main()
