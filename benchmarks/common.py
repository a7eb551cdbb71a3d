"""What every benchmark script here needs: progress on stderr, nearest-rank percentiles, ratios,
a work directory that can be kept, and the report written as JSON (stdout, --json) plus a table
(stderr)."""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def percentile(ordered: list[float], q: float) -> float | None:
    """Nearest-rank percentile of sorted values (None for none)."""
    if not ordered:
        return None
    rank = max(0, min(len(ordered) - 1, int(-(-q * len(ordered) // 100)) - 1))
    return ordered[rank]


def seconds_summary(values: list[float]) -> dict[str, float | None]:
    """p50, p95 and max, rounded to the millisecond."""
    ordered = sorted(values)

    def r(value: float | None) -> float | None:
        return None if value is None else round(value, 3)

    return {
        "p50": r(percentile(ordered, 50)),
        "p95": r(percentile(ordered, 95)),
        "max": r(ordered[-1] if ordered else None),
    }


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


@contextlib.contextmanager
def work_directory(*, keep: bool, prefix: str) -> Iterator[Path]:
    """A temporary folder for logs and data files; with `keep` it outlives the run."""
    if not keep:
        with tempfile.TemporaryDirectory(prefix=prefix) as name:
            yield Path(name)
        return
    path = Path(tempfile.mkdtemp(prefix=prefix))
    yield path
    log(f"Logs kept in {path}")


def emit_report(report: dict[str, Any], *, json_path: Path | None, table: str) -> None:
    """The JSON to stdout (and to `json_path`), then the table to stderr."""
    text = json.dumps(report, indent=2, default=str)
    if json_path is not None:
        json_path.write_text(text + "\n")
    print(text, flush=True)
    log("")
    log(table)
