"""`python manage.py export_session <session id> <dir>`: write a session bundle."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from director.export.bundle import ExportRefused, export_session


class Command(BaseCommand):
    help = (
        "Write a recorded session as a bundle for the training pipeline "
        "(docs/session-bundle.md). Exporting the same session twice gives identical bytes."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("session_id", help="The session's id (shown on its page).")
        parser.add_argument("out_dir", type=Path, help="A folder that does not exist yet.")
        parser.add_argument(
            "--copy-stills",
            action="store_true",
            help="Copy the stills' original files into the bundle (stills/).",
        )
        parser.add_argument(
            "--replace", action="store_true", help="Replace the folder if it exists."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        last_stage = ""
        interactive = sys.stderr.isatty()

        def progress(stage: str, fraction: float) -> None:
            nonlocal last_stage
            if stage != last_stage or interactive:
                self.stderr.write(f"{fraction:6.1%}  {stage}", ending="\r" if interactive else "\n")
                last_stage = stage

        try:
            result = export_session(
                session_id=options["session_id"],
                out_dir=options["out_dir"],
                copy_stills=options["copy_stills"],
                replace=options["replace"],
                progress=progress,
            )
        except ExportRefused as exc:
            raise CommandError(str(exc)) from exc
        if interactive:
            self.stderr.write("")
        self.stdout.write(
            f"Wrote {result.path}: {len(result.files)} files, {result.bytes:,} bytes; "
            f"{result.events} events, {result.pose_frames} pose frames, {result.stills} stills."
        )
