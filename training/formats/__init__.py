"""Motion readers: each turns one recording into a `MotionSource` of COCO-17 chunks.

`read_motion` picks the reader by the `format` argument ("bvh", "mediapipe", "ndjson") or, when
it is not given, by the file's suffix: `.bvh`; `.json` / `.json.gz` (MediaPipe); `.ndjson` /
`.jsonl` (NDJSON keypoints).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from training.formats.bvh import read_bvh
from training.formats.mediapipe import read_mediapipe
from training.formats.ndjson import read_ndjson
from training.timeline import InputError, MotionSource

Reader = Callable[[Path, float | None, str | None], MotionSource]

READERS: dict[str, Reader] = {
    "bvh": read_bvh,
    "mediapipe": read_mediapipe,
    "ndjson": read_ndjson,
}
SUFFIXES: tuple[tuple[str, str], ...] = (
    (".bvh", "bvh"),
    (".json", "mediapipe"),
    (".json.gz", "mediapipe"),
    (".ndjson", "ndjson"),
    (".jsonl", "ndjson"),
)

__all__ = ["READERS", "read_bvh", "read_mediapipe", "read_motion", "read_ndjson"]


def read_motion(
    path: Path, format: str | None = None, fps: float | None = None, name: str | None = None
) -> MotionSource:
    """Open a motion file with the reader its `format` (or its suffix) names."""
    kind = format or _format_of(path)
    reader = READERS.get(kind)
    if reader is None:
        known = ", ".join(sorted(READERS))
        raise InputError(f"{path}: unknown motion format {kind!r} (known: {known})")
    return reader(path, fps, name)


def _format_of(path: Path) -> str:
    lower = path.name.lower()
    for suffix, kind in SUFFIXES:
        if lower.endswith(suffix):
            return kind
    raise InputError(
        f"{path}: cannot tell the motion format from the name; expected one of "
        + ", ".join(suffix for suffix, _ in SUFFIXES)
    )
