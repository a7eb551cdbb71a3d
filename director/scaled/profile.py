"""What `make run-scaled` needs before its processes start: the PostgreSQL database (created
if missing), Redis answering, a secret key kept in var/ (never committed), the environment every
process shares, and the plan of processes (supervisor.py)."""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from director.scaled.proxy import Backend
from director.scaled.supervisor import Child, Plan, free_port

DEFAULT_DATABASE_URL: Final = "postgres://postgres@127.0.0.1:5432/motionmix"
DEFAULT_REDIS_URL: Final = "redis://127.0.0.1:6379/0"
WEB_PROCESSES: Final = 2


class ProfileError(Exception):
    """Something the person starting the profile has to fix; the message says what."""


def database_ensure(url: str) -> bool:
    """Create the database `url` names if its server lacks it; True when it was created."""
    import psycopg
    from psycopg import sql

    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql", "pgsql"):
        raise ProfileError(
            f"The scaled profile runs on PostgreSQL; DATABASE_URL is {parts.scheme}://…. "
            "Give a postgres:// URL (or leave it unset for the local default)."
        )
    name = parts.path.lstrip("/")
    if not name:
        raise ProfileError(f"DATABASE_URL names no database: {url}")
    admin = parts._replace(path="/postgres").geturl()
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
            if found:
                return False
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            return True
    except psycopg.Error as exc:
        where = f"{parts.hostname}:{parts.port or 5432}"
        raise ProfileError(
            f"PostgreSQL at {where} refused or is not running ({exc}). Start it, or point "
            "DATABASE_URL at one that runs."
        ) from None


def redis_check(url: str) -> None:
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        raise ProfileError(
            f"Redis at {url} does not answer ({exc}). Start it (redis-server), or set REDIS_URL."
        ) from None


def scaled_secret(var_dir: Path, base: Mapping[str, str]) -> str:
    """The profile's production secret: DJANGO_SECRET_KEY if set, else one kept in var/."""
    given = base.get("DJANGO_SECRET_KEY", "")
    if given:
        return given
    path = var_dir / "scaled_secret_key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(50))
    return path.read_text().strip()


def shared_env(
    *, var_dir: Path, host: str, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of every process: the caller's, made a local production rehearsal.
    DEBUG is off and static files are collected, as in production; the built-in proxy speaks
    plain HTTP, so the HTTPS-only defaults are off unless the caller set them (behind a TLS
    terminator, set DJANGO_SECURE_SSL_REDIRECT=1 DJANGO_SECURE_COOKIES=1 and HSTS)."""
    env = dict(os.environ if base is None else base)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env["DJANGO_SECRET_KEY"] = scaled_secret(var_dir, env)
    env["DJANGO_BEHIND_PROXY"] = "1"
    if "DJANGO_SECURE_SSL_REDIRECT" not in env:
        # Plain HTTP here by design: the HTTPS checks say so rather than fail.
        env["MOTIONMIX_LOCAL_REHEARSAL"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    hosts = ["localhost", "127.0.0.1", "[::1]"]
    if host not in ("0.0.0.0", "::", *hosts):  # noqa: S104 - a comparison
        hosts.append(host)
    defaults = {
        "DJANGO_DEBUG": "0",
        "DJANGO_SECURE_SSL_REDIRECT": "0",
        "DJANGO_SECURE_COOKIES": "0",
        "DJANGO_HSTS_SECONDS": "0",
        "DJANGO_ALLOWED_HOSTS": ",".join(hosts),
    }
    for key, value in defaults.items():
        env.setdefault(key, value)
    return env


@dataclass(frozen=True)
class Simulation:
    devices: int
    video_size: str
    video_fps: int
    stand_in_file: Path | None
    music: bool


def plan_build(
    *,
    env: dict[str, str],
    manage: Path,
    host: str,
    port: int,
    var_dir: Path,
    simulation: Simulation | None,
    log_dir: Path | None,
) -> tuple[Plan, list[Child]]:
    """The processes, in start order, and which of them start once the servers answer."""
    python = sys.executable
    celery = str(Path(python).with_name("celery"))
    queue = env.get("MOTIONMIX_CELERY_QUEUE", "motionmix")
    external = env.get("MOTIONMIX_HERO_RELAY_URL", "").rstrip("/")
    children: list[Child] = []

    def serve(name: str, role: str, relay_url: str) -> Backend:
        backend = Backend(name=name, host="127.0.0.1", port=free_port())
        child_env = {**env, "MOTIONMIX_ROLE": role}
        if relay_url:
            child_env["MOTIONMIX_HERO_RELAY_URL"] = relay_url
        argv = [python, str(manage), "serve", "--quiet", "--host", backend.host]
        children.append(
            Child(
                name=name,
                argv=[*argv, "--port", str(backend.port)],
                env=child_env,
                ping_url=f"{backend.url}/_ping",
            )
        )
        return backend

    relay: Backend | None
    if external:
        # An external WHIP/WHEP SFU: no relay process. The proxy sends the hero feed's paths
        # there itself when it speaks plain HTTP; otherwise the web processes forward them.
        relay_url = external
        relay = Backend.from_url("relay", external) if external.startswith("http://") else None
    else:
        relay = serve("relay", "relay", "")
        relay_url = relay.url
    web = [serve(f"web-{n}", "web", relay_url) for n in range(1, WEB_PROCESSES + 1)]
    children.append(
        Child(
            name="worker",
            argv=[celery, "-A", "motionmix", "worker", "-Q", queue, "-c", "2", "-l", "WARNING"],
            env=env,
        )
    )
    children.append(
        Child(
            name="beat",
            argv=[
                celery,
                "-A",
                "motionmix",
                "beat",
                "--loglevel=WARNING",
                "--schedule",
                str(var_dir / "celerybeat-schedule-scaled"),
            ],
            env=env,
        )
    )
    after: list[Child] = []
    if simulation is not None and simulation.devices:
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104
        argv = [
            python,
            str(manage),
            "simulate_devices",
            "--count",
            str(simulation.devices),
            "--url",
            f"http://{shown}:{port}",
            "--video-size",
            simulation.video_size,
            "--video-fps",
            str(simulation.video_fps),
        ]
        if simulation.stand_in_file is not None:
            argv += ["--stand-in", str(simulation.stand_in_file), "--stand-in-start-session"]
            if simulation.music:
                argv.append("--music")
        after.append(Child(name="sim", argv=argv, env=env))
    children += after
    plan = Plan(
        children=children,
        web=web,
        relay=relay,
        host=host,
        port=port,
        # The phones go first (supervisor.run), then the web processes, then the relay (its
        # publishes are recorded stopped while the database is there), then Celery.
        stop_order=[["web-1", "web-2"], ["relay"], ["beat"], ["worker"]],
        log_dir=log_dir,
    )
    return plan, after
