from __future__ import annotations

import argparse
import os
import select
import signal
import time
from types import FrameType
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import close_old_connections

from ledger.convex import configured
from ledger.selectors import ledger_status
from ledger.sync import outbox_flush

MAX_BATCHES = 50


class Command(BaseCommand):
    help = (
        "Send the ledger outbox to Convex: once, or in a loop. In the loop, a byte on the "
        "--wake-fd pipe asks for a flush at once (the embedded server writes one when a commit "
        "records events)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument("--once", action="store_true", default=True)
        mode.add_argument("--loop", action="store_true")
        parser.add_argument("--interval", type=float, default=5.0)
        parser.add_argument("--quiet", action="store_true", help="Report only trouble.")
        parser.add_argument("--wake-fd", type=int, default=None, help=argparse.SUPPRESS)

    def handle(
        self,
        *args: Any,
        loop: bool,
        interval: float,
        quiet: bool,
        wake_fd: int | None,
        **options: Any,
    ) -> None:
        if not configured():
            raise CommandError("CONVEX_URL is not set: there is nowhere to send the outbox.")
        stop = False

        def on_stop(signum: int, frame: FrameType | None) -> None:
            nonlocal stop
            stop = True

        if loop:
            signal.signal(signal.SIGTERM, on_stop)
            signal.signal(signal.SIGINT, on_stop)
        while not stop:
            result = outbox_flush(max_batches=MAX_BATCHES)
            if not quiet or result.failed or result.retrying:
                status = ledger_status()
                self.stdout.write(
                    f"sent {result.sent} (new {result.inserted}, already there "
                    f"{result.duplicates}), retrying {result.retrying}, failed {result.failed}; "
                    f"{status.waiting} waiting, {status.failed} failed in the outbox"
                )
                for error in result.errors[:5]:
                    self.stderr.write(f"  {error}")
            if not loop:
                break
            if result.batches >= MAX_BATCHES:
                continue  # more is due: no pause
            pause = interval
            if result.outage_until:
                # Try again as soon as the backoff allows, not a whole interval later.
                pause = min(interval, max(0.05, result.outage_until - time.time()))
            _wait(wake_fd, pause)
            # A long-lived loop: drop a connection the database closed meanwhile.
            close_old_connections()


def _wait(wake_fd: int | None, interval: float) -> None:
    """Sleep until the interval ends or the server writes to the wake pipe."""
    if wake_fd is None:
        time.sleep(interval)
        return
    ready, _, _ = select.select([wake_fd], [], [], interval)
    if ready:
        data = os.read(wake_fd, 4096)  # drain: many commits, one flush
        if not data:  # the server is gone
            raise SystemExit(0)
