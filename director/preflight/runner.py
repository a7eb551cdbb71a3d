"""The run: checks in sections, each timed and ending pass, fail or skip, and the run's id.

A check is a function of the run's `Context`. It returns the detail of a pass, raises `Skip`
with the reason it does not apply here, or raises anything else to fail (the message is the
detail). A check may name checks it needs (`needs`): when one of them did not pass, it is
skipped with that reason rather than run. Nothing here stops a run early: every check reports.
"""

from __future__ import annotations

import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from director.preflight.context import Context

SECTIONS = ("Structure", "Compilation", "Integration", "Content", "User journey", "Deployment")


class Status(StrEnum):
    PASS = "pass"  # noqa: S105 - a check's status, not a password
    FAIL = "fail"
    SKIP = "skip"


class Skip(Exception):
    """The check does not apply to this deployment; the message says why."""


class Failed(Exception):
    """The check ran and what it found is wrong; the message says what and what to do."""


@dataclass(frozen=True)
class Check:
    section: str
    key: str  # unique in the run, for `needs`
    name: str
    run: Callable[[Context], str]
    needs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Result:
    section: str
    key: str
    name: str
    status: Status
    duration_s: float
    detail: str

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = str(self.status)
        data["duration_s"] = round(self.duration_s, 3)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Result:
        return cls(
            section=str(data["section"]),
            key=str(data["key"]),
            name=str(data["name"]),
            status=Status(data["status"]),
            duration_s=float(data["duration_s"]),
            detail=str(data.get("detail", "")),
        )


@dataclass
class Run:
    url: str
    run_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    results: list[Result] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Go: nothing failed (skips are fine: they say why a check does not apply)."""
        return not any(result.status == Status.FAIL for result in self.results)

    def counts(self) -> dict[str, int]:
        return {str(s): sum(1 for r in self.results if r.status == s) for s in Status}

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "url": self.url,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "passed": self.passed,
            "verdict": "go" if self.passed else "no-go",
            "counts": self.counts(),
            "sections": [
                {
                    "name": section,
                    "checks": [r.as_dict() for r in self.results if r.section == section],
                }
                for section in SECTIONS
            ],
        }


Listener = Callable[[Result], None]


def _describe(exc: BaseException) -> str:
    message = str(exc).strip()
    if isinstance(exc, AssertionError | Failed) and message:
        return message
    if message:
        return f"{type(exc).__name__}: {message}"
    # No message: where it happened is the only clue.
    frame = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" at {frame[0].filename}:{frame[0].lineno}" if frame else ""
    return f"{type(exc).__name__}{where}"


def run_check(check: Check, ctx: Context, done: dict[str, Result]) -> Result:
    blocked = [done[key] for key in check.needs if key in done and done[key].status != "pass"]
    if blocked:
        first = blocked[0]
        return Result(
            check.section,
            check.key,
            check.name,
            Status.SKIP,
            0.0,
            f"needs “{first.name}”, which did not pass",
        )
    started = time.monotonic()
    try:
        detail = check.run(ctx)
        status = Status.PASS
    except Skip as exc:
        detail, status = str(exc), Status.SKIP
    except Exception as exc:
        detail, status = _describe(exc), Status.FAIL
    return Result(check.section, check.key, check.name, status, time.monotonic() - started, detail)


def run_checks(
    checks: Iterable[Check],
    ctx: Context,
    run: Run,
    *,
    on_start: Callable[[Check], None] | None = None,
    on_result: Listener | None = None,
) -> None:
    done: dict[str, Result] = {r.key: r for r in run.results}
    for check in checks:
        if on_start is not None:
            on_start(check)
        result = run_check(check, ctx, done)
        done[check.key] = result
        run.results.append(result)
        if on_result is not None:
            on_result(result)


def preflight_run(
    ctx: Context,
    *,
    run_id: str | None = None,
    sections: Sequence[str] = SECTIONS,
    on_start: Callable[[Check], None] | None = None,
    on_result: Listener | None = None,
) -> Run:
    """Run every section against `ctx.url`, in order; the journey cleans up after itself."""
    from director.preflight import checks, journey

    run = Run(url=ctx.url, run_id=run_id or ctx.run_id)
    try:
        for section in sections:
            if section == "User journey":
                journey.run_journey(ctx, run, on_start=on_start, on_result=on_result)
            else:
                run_checks(
                    checks.SECTION_CHECKS[section], ctx, run, on_start=on_start, on_result=on_result
                )
    finally:
        ctx.close()
        run.finished_at = time.time()
    return run
