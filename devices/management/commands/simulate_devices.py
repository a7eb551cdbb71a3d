from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Any

from asgiref.sync import sync_to_async
from django.core.management.base import BaseCommand, CommandError, CommandParser

from devices.services import pairing_code_get_or_rotate
from devices.simulator import Simulator
from devices.simulator_camera import DEFAULT_STILL_SIZE, parse_still_size


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

    def handle(self, *args: Any, **options: Any) -> None:
        logging.getLogger("httpx").setLevel(logging.WARNING)
        logging.getLogger("motionmix.simulator").setLevel(
            logging.INFO if options["verbosity"] > 1 else logging.WARNING
        )
        fixed_code: str = options["pairing_code"]
        try:
            still_size = parse_still_size(options["still_size"])
        except ValueError as exc:
            raise CommandError(str(exc)) from None

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
        )

        async def main() -> None:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError):
                    loop.add_signal_handler(sig, simulator.stop)
            await simulator.run(duration_s=options["duration"])

        self.stdout.write(f"Simulating {options['count']} iPhones against {options['url']}")
        asyncio.run(main())
        phones = simulator.phones
        beats = sum(p.beats for p in phones)
        commands = sum(p.commands_done for p in phones)
        stills = sum(p.stills_uploaded for p in phones)
        errors = sum(p.errors for p in phones)
        self.stdout.write(
            f"Stopped: {beats} heartbeats, {commands} commands done, {stills} stills uploaded, "
            f"{errors} errors."
        )
