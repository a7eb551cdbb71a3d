from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from director.scaled.profile import (
    DEFAULT_DATABASE_URL,
    DEFAULT_REDIS_URL,
    ProfileError,
    Simulation,
    database_ensure,
    plan_build,
    redis_check,
    shared_env,
)
from director.scaled.supervisor import Supervisor


class Command(BaseCommand):
    help = (
        "Run the scaled profile on this machine: two web processes behind a built-in reverse "
        "proxy, the hero relay process, a Celery worker and beat, on PostgreSQL and Redis "
        "(DATABASE_URL, REDIS_URL; local defaults, the database created if missing)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1", help="Where the proxy listens.")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--simulate", type=int, default=0, help="Start N virtual iPhones.")
        parser.add_argument("--video-size", default="640x480")
        parser.add_argument("--video-fps", type=int, default=15)
        parser.add_argument(
            "--stand-in",
            action="store_true",
            help="With --simulate: the stand-in operator starts a demo shoot and decides Ghost.",
        )
        parser.add_argument(
            "--music", action="store_true", help="With --stand-in: play the built-in click track."
        )
        parser.add_argument(
            "--ledger-bridge",
            action="store_true",
            help="Without CONVEX_URL, run the local Convex bridge (needs Node) for the ledger.",
        )
        parser.add_argument(
            "--log-dir", type=Path, default=None, help="Each process's output to DIR/<name>.log."
        )
        parser.add_argument(
            "--status-file",
            type=Path,
            default=None,
            help="Write the proxy URL, the backends and the process ids here (JSON) once up.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not os.environ.get("DATABASE_URL") or not os.environ.get("REDIS_URL"):
            # Settings are read once per process: start again with the local defaults in place.
            env = dict(os.environ)
            env.setdefault("DATABASE_URL", DEFAULT_DATABASE_URL)
            env["DATABASE_URL"] = env["DATABASE_URL"] or DEFAULT_DATABASE_URL
            env["REDIS_URL"] = env.get("REDIS_URL") or DEFAULT_REDIS_URL
            manage = str(Path(settings.BASE_DIR) / "manage.py")
            os.execve(sys.executable, [sys.executable, manage, *sys.argv[1:]], env)  # noqa: S606
        try:
            created = database_ensure(os.environ["DATABASE_URL"])
            redis_check(os.environ["REDIS_URL"])
        except ProfileError as exc:
            raise CommandError(str(exc)) from None
        var_dir = Path(settings.VAR_DIR)
        host, port = options["host"], options["port"]
        env = shared_env(var_dir=var_dir, host=host)
        manage = Path(settings.BASE_DIR) / "manage.py"
        self._step(env, manage, "migrate", "--noinput", "-v0")
        # Production serves hashed, compressed static files (WhiteNoise): collect them.
        self._step(env, manage, "collectstatic", "--noinput", "-v0")

        from director.demo import demo_operator_ensure, demo_stand_in_ensure, stand_in_login_file

        login = demo_operator_ensure()
        simulation = None
        if options["simulate"]:
            stand_in_file = None
            if options["stand_in"]:
                demo_stand_in_ensure()
                stand_in_file = stand_in_login_file()
            simulation = Simulation(
                devices=options["simulate"],
                video_size=options["video_size"],
                video_fps=options["video_fps"],
                stand_in_file=stand_in_file,
                music=options["music"],
            )
        bridge = None
        ledger_line = f"Convex at {env['CONVEX_URL']}" if env.get("CONVEX_URL") else ""
        if not env.get("CONVEX_URL") and options["ledger_bridge"]:
            from director.bridge import bridge_start, bridge_unavailable_reason

            reason = bridge_unavailable_reason()
            if reason:
                ledger_line = f"events wait in the outbox: {reason}"
            else:
                # Its own data file: the embedded default's bridge holds another database's.
                bridge = bridge_start(data=var_dir / "convex-bridge-scaled.json")
                # CONVEX_URL and the bridge's admin key as CONVEX_DEPLOY_KEY for every child:
                # the worker syncs with them. The key is never shown in the banner or logs.
                env.update(bridge.ledger_env())
                ledger_line = f"local Convex bridge at {bridge.url} (data in var/)"
        elif not env.get("CONVEX_URL"):
            ledger_line = "events wait in the outbox: CONVEX_URL is not set"
        elif not env.get("CONVEX_DEPLOY_KEY"):
            ledger_line += " — CONVEX_DEPLOY_KEY is not set: events wait in the outbox"

        plan, after = plan_build(
            env=env,
            manage=manage,
            host=host,
            port=port,
            var_dir=var_dir,
            simulation=simulation,
            log_dir=options["log_dir"],
        )
        shown = "localhost" if host in ("127.0.0.1", "0.0.0.0", "::") else host  # noqa: S104
        database = os.environ["DATABASE_URL"].rsplit("/", 1)[-1]
        lines = [
            "",
            "  MotionMix Live Director is running (scaled profile).",
            f"  Open:   http://{shown}:{{port}}/",
            f"  Login:  {login.username} / {login.password}",
            "  Procs:  proxy → "
            + ", ".join(f"{b.name} :{b.port}" for b in plan.web)
            + (f"; hero relay {plan.relay.url}" if plan.relay else "")
            + "; Celery worker + beat",
            f"  Data:   PostgreSQL {database}{' (created)' if created else ''}, "
            f"Redis {os.environ['REDIS_URL']}",
            f"  Ledger: {ledger_line}",
        ]
        if simulation is not None:
            lines.append(f"  Devices: {simulation.devices} simulated iPhones are pairing now.")
            if simulation.stand_in_file is not None:
                lines.append("  Ghost:  a simulated stand-in operator runs a “Demo shoot”.")
        lines += ["  Stop:   Ctrl-C", "", ""]
        supervisor = Supervisor(plan, status_file=options["status_file"])
        try:
            code = asyncio.run(supervisor.run(banner="\n".join(lines), after_ready=after))
        finally:
            if bridge is not None:
                bridge.stop()
        if code:
            raise CommandError("The scaled profile stopped because a process failed (see above).")

    def _step(self, env: dict[str, str], manage: Path, *args: str) -> None:
        result = subprocess.run(  # noqa: S603 - our own manage.py
            [sys.executable, str(manage), *args], env=env, check=False
        )
        if result.returncode:
            raise CommandError(f"`manage.py {' '.join(args)}` failed (exit {result.returncode}).")
