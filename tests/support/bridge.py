"""The local Convex bridge (convex/bridge): the real functions of convex/ run in convex-test,
behind Convex's HTTP API. Tests start it as a subprocess on a free loopback port."""

from __future__ import annotations

import contextlib
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.requirements import missing

ROOT = Path(__file__).resolve().parents[2]
CONVEX = ROOT / "convex"
READY = "convex-bridge listening on "


def require_bridge() -> str:
    node = shutil.which("node")
    if not node:
        missing("Node.js is not installed: the Convex bridge needs it")
    if not (CONVEX / "node_modules" / "convex-test").exists():
        missing("convex/node_modules is missing: run `npm ci` in convex/ (make test does)")
    return node


@dataclass
class Bridge:
    node: str
    data: Path
    port: int = 0
    proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        self.proc = subprocess.Popen(
            [
                self.node,
                str(CONVEX / "bridge" / "main.mjs"),
                "--port",
                str(self.port),
                "--data",
                str(self.data),
            ],
            cwd=CONVEX,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if ready:
                line = self.proc.stdout.readline()
                if line.startswith(READY):
                    self.port = int(line.strip().rsplit(":", 1)[1])
                    return
            if self.proc.poll() is not None:
                break
        raise RuntimeError("the Convex bridge did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc = None


@contextlib.contextmanager
def running_bridge(workdir: Path) -> Iterator[Bridge]:
    bridge = Bridge(node=require_bridge(), data=workdir / "convex-bridge.json")
    bridge.start()
    try:
        yield bridge
    finally:
        bridge.stop()
