"""The scaled profile for tests: `manage.py run_scaled` on a PostgreSQL database of its own
(created by run_scaled, dropped afterwards) and Redis, with its state, logs and status file in
a work folder, its channel groups and Celery queue apart from any other run's."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.support.requirements import require_redis
from tests.support.server import ROOT, free_port

UP_S = 180.0  # migrations and collectstatic on a fresh database, on a busy machine
STOP_S = 60.0
# Settings of the caller's environment the profile must choose for itself: its own secret, the
# hosts of its own address, and its own relay.
NOT_INHERITED = (
    "DJANGO_SETTINGS_MODULE",
    "DJANGO_SECRET_KEY",
    "DJANGO_ALLOWED_HOSTS",
    "MOTIONMIX_HERO_RELAY_URL",
)


@dataclass
class ScaledProfile:
    proc: subprocess.Popen[bytes]
    url: str
    port: int
    env: dict[str, str]
    workdir: Path
    database_url: str

    def status(self) -> dict[str, Any]:
        """The supervisor's status file as it is now (its children's ids change on restarts)."""
        return dict(json.loads((self.workdir / "status.json").read_text()))

    def manage(self, *args: str) -> str:
        return subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout

    def login(self) -> tuple[str, str]:
        data = json.loads((self.workdir / "var" / "demo_operator.json").read_text())
        return data["username"], data["password"]

    def log_files(self) -> list[Path]:
        return [*sorted((self.workdir / "logs").glob("*.log")), self.workdir / "supervisor.log"]

    def logs(self) -> str:
        parts = [f"== {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in self.log_files()]
        return "\n".join(parts)

    def stop(self) -> int | None:
        return stop_process(self.proc)


def stop_process(proc: subprocess.Popen[bytes]) -> int | None:
    """SIGTERM, as an operator stops it (a process that leads its own group); the group is
    killed if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    return proc.returncode


def scaled_services() -> tuple[str, str]:
    """The scaled pass's Redis and PostgreSQL URLs; anywhere else the test skips (not a missing
    requirement: the embedded pass has neither, by design)."""
    redis_url = require_redis()
    database_url = os.environ.get("DATABASE_URL", "")
    if not database_url.startswith(("postgres://", "postgresql://")):
        pytest.skip("needs DATABASE_URL on PostgreSQL: runs in the scaled CI pass")
    return redis_url, database_url


@contextlib.contextmanager
def running_profile(
    workdir: Path, *, host: str = "127.0.0.1", env: dict[str, str] | None = None
) -> Iterator[ScaledProfile]:
    """run_scaled with its proxy on `host`, up (its status file written) when this yields;
    stopped, and its database dropped, afterwards. `env` adds to or overrides the profile's
    environment (MOTIONMIX_ICE_HOST_ADDRESSES is `host` unless given)."""
    redis_url, database_url = scaled_services()
    tag = f"mmscaled{os.getpid()}x{uuid.uuid4().hex[:6]}"
    base = database_url.rpartition("/")[0]
    port = free_port()
    full_env = {
        **{k: v for k, v in os.environ.items() if k not in NOT_INHERITED},
        "DATABASE_URL": f"{base}/{tag}",  # run_scaled creates it
        "REDIS_URL": redis_url,
        "MOTIONMIX_VAR_DIR": str(workdir / "var"),
        "MOTIONMIX_MEDIA_ROOT": str(workdir / "media"),
        "MOTIONMIX_STATIC_ROOT": str(workdir / "static"),
        "MOTIONMIX_CHANNEL_PREFIX": tag,
        "MOTIONMIX_CELERY_QUEUE": tag,
        "MOTIONMIX_ICE_HOST_ADDRESSES": host,
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    status_file = workdir / "status.json"
    argv = [sys.executable, str(ROOT / "manage.py"), "run_scaled", "--host", host]
    argv += ["--port", str(port), "--status-file", str(status_file)]
    argv += ["--log-dir", str(workdir / "logs")]
    workdir.mkdir(parents=True, exist_ok=True)
    with (workdir / "supervisor.log").open("ab") as out:
        proc = subprocess.Popen(
            argv,
            env=full_env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    profile = ScaledProfile(
        proc=proc,
        url=f"http://{host}:{port}",
        port=port,
        env=full_env,
        workdir=workdir,
        database_url=full_env["DATABASE_URL"],
    )
    try:
        deadline = time.monotonic() + UP_S
        while not status_file.exists():
            if proc.poll() is not None:
                pytest.fail(f"run_scaled exited ({proc.returncode}):\n{profile.logs()}")
            if time.monotonic() > deadline:
                pytest.fail(f"run_scaled was not up in {UP_S:.0f} s:\n{profile.logs()}")
            time.sleep(0.2)
        yield profile
    finally:
        profile.stop()
        with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{tag}" WITH (FORCE)')
