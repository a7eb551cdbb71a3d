from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path
from typing import Any

from asgiref.sync import sync_to_async
from django.core.management.base import BaseCommand, CommandError, CommandParser

from devices.services import pairing_code_get_or_rotate
from devices.simulator import Simulator
from devices.simulator_camera import DEFAULT_STILL_SIZE, parse_still_size
from devices.simulator_motion import load_motions
from devices.simulator_operator import (
    DEFAULT_DELAY_S,
    DEFAULT_SCHEDULE,
    ScheduleError,
    StandIn,
    load_credentials,
    parse_delay,
    parse_schedule,
)
from devices.simulator_pose import DEFAULT_POSE_FPS, MAX_POSE_FPS
from devices.simulator_video import (
    DEFAULT_VIDEO_FPS,
    DEFAULT_VIDEO_SIZE,
    VIDEO_CODECS,
    parse_video_size,
)

STAND_IN_STOP_S = 2.0


class Command(BaseCommand):
    help = "Run virtual iPhones against a MotionMix server through the public device API."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--count", type=int, default=4)
        parser.add_argument("--url", default="http://127.0.0.1:8000")
        parser.add_argument(
            "--pairing-code",
            default="",
            help="The code shown on the registry page. Without it, the current code is read "
            "from this server's database, as an operator would read it off the screen.",
        )
        parser.add_argument("--install-prefix", default="sim-iphone")
        parser.add_argument("--duration", type=float, default=None, help="Stop after N s.")
        parser.add_argument("--seed", type=int, default=None)
        parser.add_argument(
            "--still-size",
            default="{}x{}".format(*DEFAULT_STILL_SIZE),
            help="Size of the stills the phones capture, WIDTHxHEIGHT (12 MP: 4032x3024).",
        )
        parser.add_argument(
            "--video-size",
            default="{}x{}".format(*DEFAULT_VIDEO_SIZE),
            help="Size of the video the phones publish when asked (WHIP), WIDTHxHEIGHT.",
        )
        parser.add_argument(
            "--video-fps",
            type=int,
            default=DEFAULT_VIDEO_FPS,
            help="Frame rate of the published video, 1 to 60.",
        )
        parser.add_argument(
            "--video-codec",
            choices=VIDEO_CODECS,
            default=None,
            help="Offer only this codec. Default: offer both and let the server choose.",
        )
        parser.add_argument(
            "--motion",
            metavar="BVH",
            action="append",
            default=[],
            help="The performer the phones stream the pose of: a BVH file (in metres, Y up). "
            "Give it more than once to hand the takes to the phones in turn (phone 1 the first, "
            "phone 2 the second, ...). Default: a built-in procedural salsa dancer.",
        )
        parser.add_argument(
            "--music",
            metavar="FILE",
            nargs="?",
            const="",
            default=None,
            help="With --stand-in: the stand-in uploads a music track to each live session and "
            "plays it (play, pause, seek cues on the record). FILE is any audio PyAV decodes; "
            "without FILE, a built-in 120 BPM click track.",
        )
        parser.add_argument(
            "--pose-fps",
            type=int,
            default=DEFAULT_POSE_FPS,
            help=f"Pose frames a second each phone streams, 1 to {MAX_POSE_FPS}; 0 turns pose off.",
        )
        parser.add_argument(
            "--stand-in",
            metavar="FILE",
            default="",
            help='Run a simulated stand-in operator too, logged in with the JSON {"username", '
            '"password"} in FILE: it accepts and vetoes Ghost\'s proposals on a schedule.',
        )
        parser.add_argument(
            "--stand-in-schedule",
            default=DEFAULT_SCHEDULE,
            help="What the stand-in does with each new proposal, in a cycle: accept, "
            "veto:<bad_framing|wrong_moment|device_problem|other> or wait (let it run out). "
            f"Default: {DEFAULT_SCHEDULE}.",
        )
        parser.add_argument(
            "--stand-in-start-session",
            action="store_true",
            help="When no session is live, the stand-in starts a “Demo shoot” once the cameras "
            "are online (at most one every 5 minutes).",
        )
        parser.add_argument(
            "--stand-in-delay",
            default="{:g}-{:g}".format(*DEFAULT_DELAY_S),
            help="How long the stand-in looks at a proposal before it decides, MIN-MAX seconds.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        logging.getLogger("httpx").setLevel(logging.WARNING)
        logging.getLogger("motionmix.simulator").setLevel(
            logging.INFO if options["verbosity"] > 1 else logging.WARNING
        )
        fixed_code: str = options["pairing_code"]
        try:
            still_size = parse_still_size(options["still_size"])
            video_size = parse_video_size(options["video_size"])
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        video_fps: int = options["video_fps"]
        if not 1 <= video_fps <= 60:
            raise CommandError(f"--video-fps {video_fps}: give a frame rate from 1 to 60, e.g. 30.")
        pose_fps: int = options["pose_fps"]
        if not 0 <= pose_fps <= MAX_POSE_FPS:
            raise CommandError(
                f"--pose-fps {pose_fps}: give a rate from 1 to {MAX_POSE_FPS}, or 0 for no pose."
            )
        try:
            motions = load_motions(options["motion"]) if pose_fps else []
        except (OSError, ValueError) as exc:
            raise CommandError(f"--motion: {exc}") from None
        stand_in = self._stand_in(options)

        async def code_source() -> str:
            if fixed_code:
                return fixed_code
            return (await sync_to_async(pairing_code_get_or_rotate)()).code

        simulator = Simulator(
            url=options["url"],
            count=options["count"],
            code_source=code_source,
            install_prefix=options["install_prefix"],
            seed=options["seed"],
            still_size=still_size,
            video_size=video_size,
            video_fps=video_fps,
            video_codec=options["video_codec"],
            motion=motions,
            pose_fps=pose_fps,
        )

        async def main() -> None:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError):
                    loop.add_signal_handler(sig, simulator.stop)
            if stand_in is None:
                await simulator.run(duration_s=options["duration"])
                return
            # The stand-in stops with the phones: at the end of --duration or on a signal.
            operator = asyncio.create_task(stand_in.run())
            try:
                await simulator.run(duration_s=options["duration"])
            finally:
                stand_in.stop()
                # A request in flight to a server that no longer answers is not waited out.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(operator, timeout=STAND_IN_STOP_S)

        self.stdout.write(f"Simulating {options['count']} iPhones against {options['url']}")
        if pose_fps:
            performers = ", ".join(motion.name for motion in motions)
            self.stdout.write(f"Pose: {pose_fps} fps of {performers}")
        if stand_in is not None:
            self.stdout.write(
                f"Stand-in operator {stand_in.credentials.username!r} follows the schedule "
                + ",".join(str(step) for step in stand_in.schedule)
            )
        asyncio.run(main())
        phones = simulator.phones
        beats = sum(p.beats for p in phones)
        commands = sum(p.commands_done for p in phones)
        stills = sum(p.stills_uploaded for p in phones)
        errors = sum(p.errors for p in phones)
        pose = sum(p.pose_frames_sent for p in phones)
        self.stdout.write(
            f"Stopped: {beats} heartbeats, {commands} commands done, {stills} stills uploaded, "
            f"{pose} pose frames sent, {errors} errors."
        )
        if stand_in is not None:
            self.stdout.write(
                f"Stand-in: {stand_in.accepted} accepted, {stand_in.vetoed} vetoed, "
                f"{stand_in.waited} left to run out, {stand_in.late} too late, "
                f"{stand_in.sessions_started} session(s) started."
            )

    def _stand_in(self, options: dict[str, Any]) -> StandIn | None:
        if not options["stand_in"]:
            return None
        logging.getLogger("motionmix.simulator.stand_in").setLevel(
            logging.INFO if options["verbosity"] > 0 else logging.WARNING
        )
        if options["music"] and not Path(options["music"]).is_file():
            raise CommandError(f"--music {options['music']}: no such file.")
        try:
            schedule = parse_schedule(options["stand_in_schedule"])
            delay_s = parse_delay(options["stand_in_delay"])
            credentials = load_credentials(Path(options["stand_in"]))
        except (ScheduleError, ValueError) as exc:
            raise CommandError(str(exc)) from None
        return StandIn(
            url=options["url"],
            credentials=credentials,
            schedule=schedule,
            start_session=options["stand_in_start_session"],
            expected_cameras=options["count"],
            delay_s=delay_s,
            seed=options["seed"],
            music=options["music"] is not None,
            music_path=Path(options["music"]) if options["music"] else None,
        )
