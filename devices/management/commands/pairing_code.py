from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from devices import services


class Command(BaseCommand):
    help = "Print the current pairing code (issuing one if none is valid)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--rotate", action="store_true", help="Issue a new code first.")
        parser.add_argument("--raw", action="store_true", help="Print without the dash.")

    def handle(self, *args: Any, rotate: bool, raw: bool, **options: Any) -> None:
        code = (
            services.pairing_code_rotate(reason="operator")
            if rotate
            else services.pairing_code_get_or_rotate()
        )
        self.stdout.write(code.code if raw else code.display)
