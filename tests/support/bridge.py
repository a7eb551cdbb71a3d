"""The local Convex bridge (convex/bridge): the real functions of convex/ run in convex-test,
behind Convex's HTTP API. Tests start it on a free loopback port, and may stop and start it
again on the same port and data file to play an outage."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from director.bridge import LocalBridge, bridge_start, bridge_unavailable_reason
from tests.support.requirements import missing


def require_bridge() -> None:
    reason = bridge_unavailable_reason()
    if reason:
        missing(f"the Convex bridge cannot run: {reason}")


@dataclass
class Bridge:
    data: Path
    port: int = 0
    running: LocalBridge | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.running = bridge_start(data=self.data, port=self.port, quiet=True)
        self.port = self.running.port

    def stop(self) -> None:
        if self.running is not None:
            self.running.stop()
            self.running = None


@contextlib.contextmanager
def running_bridge(workdir: Path) -> Iterator[Bridge]:
    require_bridge()
    bridge = Bridge(data=workdir / "convex-bridge.json")
    bridge.start()
    try:
        yield bridge
    finally:
        bridge.stop()
