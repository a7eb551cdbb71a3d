"""A real MotionMix server in its own processes, for browser journeys and benchmarks.

It runs `manage.py serve` (Daphne plus the embedded ticker) on a free loopback port against a
database of its own: a SQLite file in a temporary folder, or, when DATABASE_URL points at
PostgreSQL, a fresh database created for it and dropped afterwards. With REDIS_URL it uses the
Redis channel layer and starts a real Celery worker with beat, as the scaled mode does.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _postgres_admin_url(url: str) -> tuple[str, str]:
    base, _, _ = url.rpartition("/")
    return base, url


@dataclass
class RunningServer:
    url: str
    port: int
    env: dict[str, str]
    workdir: Path
    host: str = "127.0.0.1"
    username: str = "director"
    password: str = "correct-horse-battery-staple"
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    server: subprocess.Popen[bytes] | None = None

    def manage(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )

    def spawn(self, *args: str, log_name: str) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{log_name}.log").open("ab")
        # Its own session (process group), so whatever it forks can be reaped with it.
        proc = subprocess.Popen(
            list(args),
            env=self.env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes.append(proc)
        return proc

    def start_server(self) -> None:
        self.server = self.spawn(
            sys.executable,
            str(ROOT / "manage.py"),
            "serve",
            "--host",
            self.host,
            "--port",
            str(self.port),
            log_name="server",
        )
        self.wait_ready()

    def stop_server(self) -> None:
        if self.server is not None:
            _stop(self.server)
            self.processes.remove(self.server)
            self.server = None

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.server is not None and self.server.poll() is not None:
                raise RuntimeError(f"the server exited early; see {self.workdir}/server.log")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/_ping", timeout=1.0).status_code == 200:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"the server did not answer in {timeout} s; see {self.workdir}")

    def log(self, name: str = "server") -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def pairing_code(self) -> str:
        return self.manage("pairing_code", "--raw").stdout.strip()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    # Anything it left behind in its group (Celery's beat child, when the worker was stopped
    # while still starting) goes too: nothing outlives the test.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def running_server(
    workdir: Path,
    *,
    extra_env: dict[str, str] | None = None,
    celery: bool = True,
    host: str = "127.0.0.1",
) -> Iterator[RunningServer]:
    """`host`: the address the server listens on (a test's network namespace may give one)."""
    port = free_port()
    tag = f"mm{os.getpid()}x{uuid.uuid4().hex[:6]}"
    env = {
        **os.environ,
        "MOTIONMIX_VAR_DIR": str(workdir / "var"),
        "MOTIONMIX_MEDIA_ROOT": str(workdir / "media"),
        "MOTIONMIX_CHANNEL_PREFIX": tag,
        "MOTIONMIX_CELERY_QUEUE": tag,
        "MOTIONMIX_HEARTBEAT_INTERVAL_S": "1",
        "PYTHONUNBUFFERED": "1",
        # The hero feed's peers (the relay, simulated phones) meet on loopback only.
        "MOTIONMIX_ICE_HOST_ADDRESSES": "127.0.0.1",
        **(extra_env or {}),
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    database_url = env.get("DATABASE_URL", "")
    drop_database = None
    if database_url.startswith(("postgres://", "postgresql://")):
        import psycopg

        base, admin_url = _postgres_admin_url(database_url)
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{tag}"')
        env["DATABASE_URL"] = f"{base}/{tag}"

        def drop_database() -> None:
            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{tag}" WITH (FORCE)')

    else:
        env["MOTIONMIX_SQLITE_PATH"] = str(workdir / "motionmix.sqlite3")

    server = RunningServer(
        url=f"http://{host}:{port}", port=port, env=env, workdir=workdir, host=host
    )
    try:
        server.manage("migrate", "--noinput", "-v0")
        server.env["DJANGO_SUPERUSER_PASSWORD"] = server.password
        server.manage(
            "createsuperuser", "--noinput", "--username", server.username, "--email", "d@x.test"
        )
        if celery and env.get("REDIS_URL"):
            # The scaled mode's periodic work (the offline sweep) comes from Celery beat.
            server.spawn(
                str(Path(sys.executable).with_name("celery")),
                "-A",
                "motionmix",
                "worker",
                "-B",
                "--pool=solo",
                "--loglevel=WARNING",
                "-Q",
                tag,
                "--schedule",
                str(workdir / "celerybeat-schedule"),
                log_name="celery",
            )
        server.start_server()
        yield server
    finally:
        for proc in reversed(server.processes):
            _stop(proc)
        if drop_database is not None:
            drop_database()
