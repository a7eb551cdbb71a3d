"""The report: a table on a terminal as the checks finish, and the JSON for machines."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import TextIO

from director.preflight.runner import Check, Result, Run, Status

MARKS = {Status.PASS: "PASS", Status.FAIL: "FAIL", Status.SKIP: "skip"}
NAME_WIDTH = 44
DETAIL_WIDTH = 100


class TableReport:
    """Writes a section heading when a section begins, a line per check as it starts (so a
    slow step shows what it waits on) and its result when it ends."""

    def __init__(self, out: TextIO, *, color: bool = False, progress: bool = False) -> None:
        self.out = out
        self.color = color
        self.progress = progress  # the "…" line of the running check: terminals only
        self.section = ""

    def _paint(self, status: Status, text: str) -> str:
        if not self.color:
            return text
        code = {Status.PASS: "32", Status.FAIL: "31;1", Status.SKIP: "33"}[status]
        return f"\033[{code}m{text}\033[0m"

    def header(self, run: Run) -> None:
        self.out.write(f"Preflight {run.run_id} against {run.url}\n")
        self.out.flush()

    def started(self, check: Check) -> None:
        if check.section != self.section:
            self.section = check.section
            self.out.write(f"\n{check.section}\n")
        if self.progress:
            self.out.write(f"  …    {check.name:<{NAME_WIDTH}}\r")
        self.out.flush()

    def finished(self, result: Result) -> None:
        mark = self._paint(result.status, MARKS[result.status])
        self.out.write(f"  {mark} {result.name:<{NAME_WIDTH}} {result.duration_s:6.2f} s\n")
        if result.detail:
            for line in textwrap.wrap(result.detail, DETAIL_WIDTH):
                self.out.write(f"         {line}\n")
        self.out.flush()

    def verdict(self, run: Run) -> None:
        counts = run.counts()
        total = (run.finished_at or run.started_at) - run.started_at
        summary = f"{counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped"
        status, word = (Status.PASS, "GO") if run.passed else (Status.FAIL, "NO-GO")
        line = self._paint(status, word)
        self.out.write(f"\n{line}: {summary} in {total:.1f} s (run {run.run_id})\n")
        self.out.flush()


def write_json(run: Run, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(run.as_dict(), indent=2) + "\n")
