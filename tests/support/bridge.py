"""The local Convex bridge (convex/bridge): the real functions of convex/ run in convex-test,
behind Convex's HTTP API. Tests start it on a free loopback port, and may stop and start it
again on the same port and data file to play an outage.

Its functions answer only its admin key, as a deployment's answer only its deploy key: give
`admin_key` as CONVEX_DEPLOY_KEY (settings or `env`) to whatever talks to it. The key is made
once per `Bridge`, so a restart keeps it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from director.bridge import (
    LocalBridge,
    bridge_admin_key_new,
    bridge_start,
    bridge_unavailable_reason,
)
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
    admin_key: str = field(default_factory=bridge_admin_key_new, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """CONVEX_URL and CONVEX_DEPLOY_KEY for a process that talks to this bridge."""
        return {"CONVEX_URL": self.url, "CONVEX_DEPLOY_KEY": self.admin_key}

    def start(self) -> None:
        self.running = bridge_start(
            data=self.data, port=self.port, admin_key=self.admin_key, quiet=True
        )
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
