"""Starting the local Convex bridge for the embedded default (`make run`).

The bridge runs the real functions of convex/ in convex-test behind Convex's HTTP API, keeping
its tables in var/. It needs Node and `npm ci` in convex/; without them the ledger waits in the
outbox and the operator's chip says so.

Like a deployment, the bridge answers the ledger's (internal) functions only to a caller with
its admin key. The key is made here, handed to the bridge in its environment (a command line
is visible to every local user through `ps`), and given to whatever syncs the ledger as
CONVEX_DEPLOY_KEY. It is never printed or logged.
"""

from __future__ import annotations

import os
import secrets
import select
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

READY = "convex-bridge listening on "
# The environment variable from which the bridge (convex/bridge/cli.ts) reads its admin key.
ADMIN_KEY_ENV = "CONVEX_BRIDGE_ADMIN_KEY"
# Set by `run_scaled --ledger-bridge` in its children's environment to the bridge's URL: their
# CONVEX_DEPLOY_KEY is then that local bridge's key, which staff may be told (see below).
LOCAL_BRIDGE_URL_ENV = "MOTIONMIX_CONVEX_LOCAL_BRIDGE"


def bridge_admin_key_new() -> str:
    return secrets.token_urlsafe(32)


@dataclass
class LocalBridge:
    url: str
    port: int
    proc: subprocess.Popen[str]
    # Kept out of repr: a LocalBridge in a log line or a traceback must not show it.
    admin_key: str = field(repr=False)

    def ledger_env(self) -> dict[str, str]:
        """What a process that syncs the ledger to this bridge needs in its environment."""
        return {
            "CONVEX_URL": self.url,
            "CONVEX_DEPLOY_KEY": self.admin_key,
            LOCAL_BRIDGE_URL_ENV: self.url,
        }

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
    *,
    data: Path | None = None,
    port: int = 0,
    admin_key: str | None = None,
    timeout_s: float = 30.0,
    quiet: bool = False,
) -> LocalBridge:
    """Start the bridge on 127.0.0.1 (`port` 0 picks a free one) and wait for its ready line.
    Its tables persist in `data` (default var/convex-bridge.json). `admin_key` (default: a new
    random one) is the key its internal functions require; a restart on the same data file
    must be given the same key for the callers holding it to go on."""
    convex_dir = Path(settings.BASE_DIR) / "convex"
    admin_key = admin_key or bridge_admin_key_new()
    # The bridge needs its own key only; a deployment's key in this environment is not for it.
    env = {name: value for name, value in os.environ.items() if name != "CONVEX_DEPLOY_KEY"}
    env[ADMIN_KEY_ENV] = admin_key
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
        env=env,
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
                return LocalBridge(
                    url=url, port=int(url.rsplit(":", 1)[1]), proc=proc, admin_key=admin_key
                )
    proc.kill()
    raise RuntimeError("the local Convex bridge did not start")


# The bridge this process started for its own ledger (`serve --ledger-bridge`), if any.
_ledger_bridge: list[LocalBridge] = []


def bridge_use_for_ledger(bridge: LocalBridge) -> None:
    """Point this process's ledger at `bridge`: its URL and its admin key. The ledger reads
    both at call time; call this before any flush can run."""
    _ledger_bridge[:] = [bridge]
    settings.CONVEX_URL = bridge.url
    settings.CONVEX_DEPLOY_KEY = bridge.admin_key


def local_bridge_key() -> str:
    """The admin key of the local bridge this process's ledger uses, or "" when it uses a
    deployment or nothing.

    A deployment's key is never handed out by the server: a process that reads Convex
    (preflight, ledger_verify) is given it as CONVEX_DEPLOY_KEY, like the worker. A local
    bridge's key is made for one run and opens only a loopback port; preflight, run from
    another process, learns the bridge and its key from the server (staff only)."""
    url = str(settings.CONVEX_URL)
    if not url:
        return ""
    for bridge in _ledger_bridge:
        if bridge.url == url:
            return bridge.admin_key
    if os.environ.get(LOCAL_BRIDGE_URL_ENV) == url:
        return str(settings.CONVEX_DEPLOY_KEY)
    return ""
