"""The soak's view of /proc: a process's fields (VmRSS, VmHWM), its children, its threads and
open files, and `Processes`, everything whose memory and CPU the soak accounts for, by role
(server, its children and helpers, the simulator, the bridge, the benchmark itself).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.machine import process_cpu_s
from benchmarks.soak_config import KB, MB
from tests.support.server import RunningServer

# --- /proc -----------------------------------------------------------------------------------


def status_kb(pid: int, name: str) -> int | None:
    """A field of /proc/<pid>/status in kB (VmRSS, VmHWM), None once the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{name}:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def rss_mb(pids: list[int]) -> float | None:
    values = [status_kb(pid, "VmRSS") for pid in pids]
    present = [v for v in values if v is not None]
    return round(sum(present) * KB / MB, 1) if present else None


def child_pids(pid: int) -> list[int]:
    """The process's direct children (the embedded server's `ledger_sync --loop`)."""
    children: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    for task in tasks:
        with contextlib.suppress(OSError, ValueError):
            text = Path(f"/proc/{pid}/task/{task}/children").read_text()
            children += [int(value) for value in text.split()]
    return children


def count_entries(path: str) -> int | None:
    try:
        return len(os.listdir(path))
    except OSError:
        return None


@dataclass
class Processes:
    """Everything whose memory and CPU the soak accounts for, by role."""

    server: RunningServer
    simulator: subprocess.Popen[bytes]
    bridge_pid: int

    @property
    def server_pid(self) -> int:
        assert self.server.server is not None
        return self.server.server.pid

    def roles(self) -> dict[str, list[int]]:
        helpers = [p.pid for p in self.server.processes if p.pid != self.server_pid]
        return {
            "server": [self.server_pid],
            # The embedded mode's ledger sync; anything else the server started.
            "server_children": child_pids(self.server_pid),
            # The scaled mode's Celery worker (with its beat child).
            "server_helpers": helpers + [c for h in helpers for c in child_pids(h)],
            "simulator": [self.simulator.pid],
            "bridge": [self.bridge_pid],
            "benchmark": [os.getpid()],
        }

    def memory(self) -> dict[str, Any]:
        pid = self.server_pid
        return {
            "rss_mb": {role: rss_mb(pids) for role, pids in self.roles().items()},
            "server_threads": count_entries(f"/proc/{pid}/task"),
            "server_fds": count_entries(f"/proc/{pid}/fd"),
        }

    def cpu_s(self) -> dict[str, float]:
        """CPU seconds of the roles CpuSample does not take (it takes server and helpers)."""
        roles = self.roles()
        return {
            role: sum(process_cpu_s(pid) for pid in roles[role])
            for role in ("server_children", "simulator", "bridge", "benchmark")
        }
