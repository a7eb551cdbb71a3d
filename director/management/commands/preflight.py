"""`manage.py preflight`: is this deployment safe to start a shoot on? See docs/preflight.md."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from director.preflight.context import Context, Credentials
from director.preflight.report import TableReport, write_json
from director.preflight.runner import SECTIONS, Run, preflight_run

USER_ENV = "MOTIONMIX_PREFLIGHT_USER"
QUIET_LOGGERS = ("httpx", "motionmix.simulator", "director.hero", "ledger")
PASSWORD_ENV = "MOTIONMIX_PREFLIGHT_PASSWORD"  # noqa: S105 - the variable's name


class Command(BaseCommand):
    help = (
        "Check a running deployment in six sections (structure, compilation, integration, "
        "content, a user journey, deployment) and say go or no-go. Exit 0 only when nothing "
        "fails. Run it with the deployment's settings and environment."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--url",
            default="http://127.0.0.1:8000",
            help="The running deployment (default: `make run`'s http://127.0.0.1:8000).",
        )
        parser.add_argument("--json", metavar="FILE", help="Also write the report as JSON.")
        parser.add_argument(
            "--username",
            default=os.environ.get(USER_ENV, ""),
            help=f"Log in as this staff user (or {USER_ENV}); default: the dedicated "
            "`preflight` user, made or reused with a new random password for this run.",
        )
        parser.add_argument(
            "--password",
            default=os.environ.get(PASSWORD_ENV, ""),
            help=f"Its password (or {PASSWORD_ENV}).",
        )
        parser.add_argument(
            "--section",
            action="append",
            choices=SECTIONS,
            help="Only this section (more than once for several); default: all six.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        from director.preflight.services import preflight_user_ensure

        username, password = options["username"], options["password"]
        if username and not password:
            raise CommandError(f"--username needs --password (or {PASSWORD_ENV}).")
        if username:
            credentials = Credentials(username=username, password=password)
        else:
            try:
                credentials = preflight_user_ensure()
            except Exception as exc:
                # No database (or no migrations): the run reports it; log in will fail.
                credentials = Credentials(username="preflight", password="")
                self.stderr.write(f"Could not prepare the `preflight` login: {exc}\n")
        ctx = Context(url=options["url"], run_id="", credentials=credentials)
        run = Run(url=ctx.url)
        ctx.run_id = run.run_id
        if options["verbosity"] < 2:
            # The virtual camera's and the HTTP client's INFO lines would bury the table.
            for name in QUIET_LOGGERS:
                logging.getLogger(name).setLevel(logging.WARNING)
        tty = sys.stdout.isatty()
        report = TableReport(self.stdout, color=tty, progress=tty)
        report.header(run)
        result = preflight_run(
            ctx,
            run_id=run.run_id,
            sections=options["section"] or SECTIONS,
            on_start=report.started,
            on_result=report.finished,
        )
        report.verdict(result)
        if options["json"]:
            write_json(result, Path(options["json"]))
        if not result.passed:
            # Exit 1 without a traceback: the report above says what failed.
            sys.stdout.flush()
            raise SystemExit(1)
