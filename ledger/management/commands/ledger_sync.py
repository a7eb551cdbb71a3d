from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ledger.convex import configured
from ledger.selectors import ledger_status
from ledger.sync import outbox_flush


class Command(BaseCommand):
    help = "Send the ledger outbox to Convex: once, or in a loop."

    def add_arguments(self, parser: CommandParser) -> None:
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument("--once", action="store_true", default=True)
        mode.add_argument("--loop", action="store_true")
        parser.add_argument("--interval", type=float, default=1.0)

    def handle(self, *args: Any, loop: bool, interval: float, **options: Any) -> None:
        if not configured():
            raise CommandError("CONVEX_URL is not set: there is nowhere to send the outbox.")
        while True:
            result = outbox_flush()
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
            time.sleep(interval)
