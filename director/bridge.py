"""Starting the local Convex bridge for the embedded default (`make run`).

The bridge runs the real functions of convex/ in convex-test behind Convex's HTTP API, keeping
its tables in var/. It needs Node and `npm ci` in convex/; without them the ledger waits in the
outbox and the operator's chip says so.
"""

from __future__ import annotations

import select
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

READY = "convex-bridge listening on "


@dataclass
class LocalBridge:
    url: str
    port: int
    proc: subprocess.Popen[str]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def bridge_unavailable_reason() -> str:
    if not shutil.which("node"):
        return "Node.js is not installed"
    if not (Path(settings.BASE_DIR) / "convex" / "node_modules" / "convex-test").exists():
        return "convex/node_modules is missing (run `npm ci` in convex/)"
    return ""


def bridge_start(
    *, data: Path | None = None, port: int = 0, timeout_s: float = 30.0, quiet: bool = False
) -> LocalBridge:
    """Start the bridge on 127.0.0.1 (`port` 0 picks a free one) and wait for its ready line.
    Its tables persist in `data` (default var/convex-bridge.json)."""
    convex_dir = Path(settings.BASE_DIR) / "convex"
    proc = subprocess.Popen(  # noqa: S603 - our own bridge
        [
            shutil.which("node") or "node",
            str(convex_dir / "bridge" / "main.mjs"),
            "--port",
            str(port),
            "--data",
            str(data or Path(settings.VAR_DIR) / "convex-bridge.json"),
        ],
        cwd=convex_dir,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL if quiet else None,
        text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            line = proc.stdout.readline()
            if line.startswith(READY):
                url = line[len(READY) :].strip()
                return LocalBridge(url=url, port=int(url.rsplit(":", 1)[1]), proc=proc)
    proc.kill()
    raise RuntimeError("the local Convex bridge did not start")
