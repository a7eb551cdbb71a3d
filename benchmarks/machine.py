"""What a benchmark run cost the machine: CPU of the server, its helpers and everything else,
read from /proc; and optional py-spy sampling of the server (Linux only)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.support.server import RunningServer

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    """User plus system CPU seconds of a process (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    # After the command name: state is field 3, utime 14 and stime 15 (1-based, man 5 proc).
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_busy_s() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, summed over cores."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user
    return (total - idle) / CLOCK_TICKS, total / CLOCK_TICKS


@dataclass
class CpuSample:
    wall: float
    server: float
    helpers: float
    machine_busy: float
    machine_total: float

    @classmethod
    def take(cls, server: RunningServer) -> CpuSample:
        main = server.server.pid if server.server is not None else 0
        helpers = sum(process_cpu_s(p.pid) for p in server.processes if p.pid != main)
        busy, total = machine_busy_s()
        return cls(time.perf_counter(), process_cpu_s(main), helpers, busy, total)


def cpu_shares(before: CpuSample, after: CpuSample, client_cpu: float) -> dict[str, float]:
    """Per cent of one core for the server, its helpers, the benchmark itself, the machine,
    and whatever else ran meanwhile, between two samples."""
    wall = max(after.wall - before.wall, 1e-9)
    cores = os.cpu_count() or 1
    machine = cores * (after.machine_busy - before.machine_busy)
    machine /= max(after.machine_total - before.machine_total, 1e-9)
    cpu = {
        "server": (after.server - before.server) / wall,
        "server_helpers": (after.helpers - before.helpers) / wall,
        "client": client_cpu / wall,
        "machine": machine,
    }
    # Whatever else ran meanwhile (other sessions' work on a shared machine).
    cpu["rest_of_machine"] = max(
        0.0, machine - cpu["server"] - cpu["server_helpers"] - cpu["client"]
    )
    return {name: round(100 * value, 1) for name, value in cpu.items()}


def start_profiler(
    folder: Path, *, name: str, duration_s: float, pid: int, flags: list[str]
) -> subprocess.Popen[bytes]:
    """Sample a process with py-spy for `duration_s`, as collapsed stacks in folder/name.txt."""
    py_spy = Path(sys.executable).with_name("py-spy")
    if not py_spy.exists():
        raise SystemExit(f"--py-spy needs py-spy: {sys.executable} -m pip install py-spy")
    folder.mkdir(parents=True, exist_ok=True)
    # py-spy falls behind at high rates when hundreds of request threads are alive.
    rate = 100 if len(server_threads(pid)) < 50 else 20
    with (folder / f"{name}.log").open("wb") as log:
        return subprocess.Popen(
            [
                str(py_spy),
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(max(1, int(duration_s))),
                "--rate",
                str(rate),
                # Sampling without pausing the server keeps its figures close to an unprofiled
                # run; py-spy cannot read native stacks that way.
                *([] if "--native" in flags else ["--nonblocking"]),
                "--format",
                "raw",
                "--output",
                str(folder / f"{name}.txt"),
                *flags,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def server_threads(pid: int) -> list[str]:
    try:
        return os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []


def stop_profiler(profiler: subprocess.Popen[bytes] | None) -> None:
    if profiler is None:
        return
    try:
        profiler.wait(timeout=30)
    except subprocess.TimeoutExpired:
        profiler.terminate()
        profiler.wait(timeout=5)
