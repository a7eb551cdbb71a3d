from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser


def _stream_request_bodies() -> None:
    """Stop Twisted parsing multipart bodies itself. By default it reads a whole POSTed form
    into memory and parses it with the email package before Daphne sees it: for a 5 MB still
    that is about 100 ms and several copies of the file in memory, for a result nobody uses
    (Django parses the body again, streaming it to disk)."""
    from daphne import http_protocol

    class StreamingRequest(http_protocol.WebRequest):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["parsePOSTFormSubmission"] = False
            super().__init__(*args, **kwargs)

    # Daphne's factory looks the request class up by this name for each connection.
    http_protocol.WebRequest = StreamingRequest  # type: ignore[misc]


async def _relay_start() -> None:
    from director.hero.runtime import hero_relay

    relay = hero_relay()
    try:
        lost = await relay.end_lost_publishes()
    except Exception as exc:  # the relay serves all the same; the 30 s reconcile catches up
        sys.stderr.write(f"The hero relay could not check for publishes lost before it: {exc}\n")
        return
    if lost:
        sys.stderr.write(
            f"The hero relay ended {len(lost)} publish(es) lost with the relay before it and "
            "asked those cameras to publish again.\n"
        )


async def _relay_close() -> None:
    from director.hero.runtime import hero_relay_close

    try:
        await asyncio.wait_for(hero_relay_close(), RELAY_CLOSE_S)
    except TimeoutError:
        sys.stderr.write("The hero relay did not close in time; its peers end with the process.\n")


RELAY_CLOSE_S = 5.0


class Command(BaseCommand):
    help = (
        "Run the Live Director: Daphne, the embedded ticker (when there is no Celery beat) "
        "and, with --simulate, virtual iPhones."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--simulate", type=int, default=0, help="Start N virtual iPhones.")
        parser.add_argument(
            "--demo-operator", action="store_true", help="Create the demo login and print it."
        )
        parser.add_argument(
            "--ledger-bridge",
            action="store_true",
            help="Without CONVEX_URL, run the local Convex bridge (needs Node) for the ledger.",
        )
        parser.add_argument(
            "--video-size",
            default="640x480",
            help="With --simulate: the simulated cameras' video size (WxH).",
        )
        parser.add_argument(
            "--video-fps",
            type=int,
            default=30,
            help="With --simulate: the simulated cameras' frame rate.",
        )
        parser.add_argument(
            "--motion",
            metavar="BVH",
            action="append",
            default=[],
            help="With --simulate: a BVH take whose pose the cameras stream (more than once: "
            "one per camera in turn). Default: a procedural salsa dancer.",
        )
        parser.add_argument(
            "--music",
            metavar="FILE",
            nargs="?",
            const="",
            default=None,
            help="With --stand-in: the stand-in uploads a music track to its session and plays "
            "it (FILE, or a built-in click track without one).",
        )
        parser.add_argument(
            "--pose-fps",
            type=int,
            default=30,
            help="With --simulate: pose frames a second per camera; 0 turns pose off.",
        )
        parser.add_argument(
            "--quiet",
            action="store_true",
            help="Print no banner (a process of the scaled profile, whose supervisor prints one).",
        )
        parser.add_argument(
            "--stand-in",
            action="store_true",
            help="With --simulate: a simulated stand-in operator (login `stand-in`) starts a "
            "demo session and accepts or vetoes Ghost's proposals on a schedule.",
        )

    def _lock_embedded_state(self) -> None:
        """The embedded mode is one process by design (its channel layer lives in memory), and
        two servers on one var/ would share the SQLite file, the ticker's work and the local
        Convex bridge's data file. Refuse the second one."""
        path = Path(settings.VAR_DIR) / "serve.lock"
        self._lock_file = path.open("a+")  # kept open for the life of the process
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.seek(0)
            holder = self._lock_file.read().strip() or "another process"
            raise CommandError(
                f"{holder} is already serving from {settings.VAR_DIR}; stop it first "
                "(or give this one MOTIONMIX_VAR_DIR of its own)."
            ) from None
        self._lock_file.truncate(0)
        self._lock_file.write(f"pid {os.getpid()}")
        self._lock_file.flush()

    def handle(self, *args: Any, host: str, port: int, simulate: int, **options: Any) -> None:
        # Daphne installs Twisted's asyncio reactor on import; it must come first.
        from daphne.endpoints import build_endpoint_description_strings
        from daphne.server import Server
        from twisted.internet import reactor

        from director.hero.runtime import serves_relay
        from director.scaled.asgi import application

        if settings.MOTIONMIX_EMBEDDED_TICKER:
            self._lock_embedded_state()

        login = None
        if options["demo_operator"]:
            from director.demo import demo_operator_ensure

            login = demo_operator_ensure()

        stand_in_args: list[str] = []
        if options["stand_in"] and simulate:
            from director.demo import demo_stand_in_ensure, stand_in_login_file

            demo_stand_in_ensure()
            stand_in_args = ["--stand-in", str(stand_in_login_file()), "--stand-in-start-session"]

        # Checked by the simulator, which stops with the reason if a file will not do.
        motion_args = [arg for path in options["motion"] for arg in ("--motion", path)]
        if options["music"] is not None and stand_in_args:
            music = options["music"]
            stand_in_args += ["--music", str(Path(music).resolve())] if music else ["--music"]

        bridge = None
        ledger_line = f"Convex at {settings.CONVEX_URL}" if settings.CONVEX_URL else ""
        if options["ledger_bridge"] and not settings.CONVEX_URL:
            from director.bridge import (
                bridge_start,
                bridge_unavailable_reason,
                bridge_use_for_ledger,
            )

            reason = bridge_unavailable_reason()
            if reason:
                ledger_line = f"events wait in the outbox: {reason}"
            else:
                bridge = bridge_start()
                # Its URL and admin key; read at call time by the ledger, so set before any
                # flush can run. The key is never shown: not in the banner, not in a log.
                bridge_use_for_ledger(bridge)
                ledger_line = f"local Convex bridge at {bridge.url} (data in var/)"
        elif not settings.CONVEX_URL:
            ledger_line = "events wait in the outbox: CONVEX_URL is not set"
        elif settings.MOTIONMIX_EMBEDDED_TICKER and not settings.CONVEX_DEPLOY_KEY:
            # This server's own child syncs the ledger: without the key Convex refuses it.
            ledger_line += " — CONVEX_DEPLOY_KEY is not set: events wait in the outbox"

        shown_host = "localhost" if host in ("127.0.0.1", "0.0.0.0", "::") else host  # noqa: S104
        url = f"http://{shown_host}:{port}"
        api_url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"  # noqa: S104
        _stream_request_bodies()
        # Behind a reverse proxy the client's address and scheme come from its X-Forwarded-*
        # headers (only then: anyone could send them to a server on the open network).
        forwarded: dict[str, str] = (
            {
                "proxy_forwarded_address_header": "X-Forwarded-For",
                "proxy_forwarded_port_header": "X-Forwarded-Port",
                "proxy_forwarded_proto_header": "X-Forwarded-Proto",
            }
            if settings.MOTIONMIX_BEHIND_PROXY
            else {}
        )
        server = Server(
            **forwarded,
            application=application,
            endpoints=build_endpoint_description_strings(host=host, port=port),
            signal_handlers=True,
            verbosity=0,
            websocket_max_message_size=4 * 1024 * 1024,
            # Bodies reach Django in 1 MiB messages, not Daphne's default 8 KiB: a 5 MB still
            # is then 5 hand-overs to the event loop rather than 600.
            request_buffer_size=1024 * 1024,
        )
        children: list[subprocess.Popen[bytes]] = []

        def started() -> None:
            if not server.listening_addresses:
                sys.stderr.write(f"Could not listen on {host}:{port}; is the port taken?\n")
                reactor.stop()  # type: ignore[attr-defined]
                return
            loop = reactor._asyncioEventloop  # type: ignore[attr-defined]
            if serves_relay():
                # The hero relay lives on this loop: it takes switches from the first moment.
                loop.create_task(_relay_start())
            if settings.MOTIONMIX_EMBEDDED_TICKER:
                from director.ticker import run_ticker

                loop.create_task(run_ticker())
            if settings.MOTIONMIX_EMBEDDED_TICKER and settings.CONVEX_URL:
                from director.ticker import ledger_watch

                # The Convex client never runs in this (ASGI) process: a child does the sync.
                read_fd, write_fd = os.pipe()
                os.set_blocking(write_fd, False)
                sync = subprocess.Popen(  # noqa: S603 - our own manage.py
                    [
                        sys.executable,
                        str(Path(settings.BASE_DIR) / "manage.py"),
                        "ledger_sync",
                        "--loop",
                        "--quiet",
                        "--wake-fd",
                        str(read_fd),
                    ],
                    # The key too: the ledger's functions answer only the deployment's (or the
                    # local bridge's) admin key.
                    env={
                        **os.environ,
                        "CONVEX_URL": settings.CONVEX_URL,
                        "CONVEX_DEPLOY_KEY": settings.CONVEX_DEPLOY_KEY,
                    },
                    pass_fds=(read_fd,),
                )
                os.close(read_fd)
                children.append(sync)
                ledger_watch.wake_fd = write_fd
            if simulate:
                children.append(
                    subprocess.Popen(  # noqa: S603 - our own manage.py
                        [
                            sys.executable,
                            str(Path(settings.BASE_DIR) / "manage.py"),
                            "simulate_devices",
                            "--count",
                            str(simulate),
                            "--url",
                            api_url,
                            "--video-size",
                            options["video_size"],
                            "--video-fps",
                            str(options["video_fps"]),
                            "--pose-fps",
                            str(options["pose_fps"]),
                            *motion_args,
                            *stand_in_args,
                        ]
                    )
                )
            lines = [
                "",
                "  MotionMix Live Director is running.",
                f"  Open:   {url}/",
            ]
            if login:
                lines.append(f"  Login:  {login.username} / {login.password}")
            if simulate:
                lines.append(f"  Devices: {simulate} simulated iPhones are pairing now.")
            if stand_in_args:
                lines.append(
                    "  Ghost:  a simulated stand-in operator starts a “Demo shoot” and accepts or "
                    "vetoes Ghost's proposals (as `stand-in`); turn it off with STANDIN=0."
                )
                if "--music" in stand_in_args:
                    lines.append(
                        "  Music:  the stand-in uploads a track to the session and plays it "
                        "(cues on the record); MUSIC=0 turns it off."
                    )
            if simulate:
                lines.append(
                    "  Export: python manage.py export_session <session id> <dir>, or Export "
                    "bundle on the session's page."
                )
            elif options["stand_in"]:
                lines.append("  Ghost:  --stand-in needs --simulate; no stand-in operator runs.")
            mode = "scaled (Redis)" if settings.REDIS_URL else "embedded (in-memory, SQLite)"
            lines += [f"  Mode:   {mode}", f"  Ledger: {ledger_line}", "  Stop:   Ctrl-C", ""]
            if not options["quiet"]:
                self.stdout.write("\n".join(lines))
                self.stdout.flush()

        def stop_children() -> None:
            from devices.heartbeats import writers_stop

            writers_stop()
            if bridge is not None:
                bridge.stop()
            for proc in children:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()

        def close_relay() -> Any:
            from twisted.internet.defer import Deferred

            loop = reactor._asyncioEventloop  # type: ignore[attr-defined]
            # Peers are closed and their publishes recorded as stopped before the loop ends.
            return Deferred.fromFuture(loop.create_task(_relay_close()))

        reactor.callWhenRunning(started)  # type: ignore[attr-defined]
        reactor.addSystemEventTrigger("before", "shutdown", close_relay)  # type: ignore[attr-defined]
        reactor.addSystemEventTrigger("before", "shutdown", stop_children)  # type: ignore[attr-defined]
        asyncio.set_event_loop(reactor._asyncioEventloop)  # type: ignore[attr-defined]
        server.run()
        if not server.listening_addresses:
            raise CommandError(f"Could not listen on {host}:{port}.")
        # Everything the server owns has stopped: the relay's peers are closed, the children
        # and the heartbeat writer stopped, every commit made. A request that was still waiting
        # on the event loop when it stopped (an async view in flight at Ctrl-C) would hold
        # Python's exit forever in the Django thread that waits for it, so the process ends
        # here rather than in the interpreter's thread joins.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
