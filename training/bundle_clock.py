"""A device's clock in a session bundle: its segments, and device time → server time by the
formula of docs/session-bundle.md."""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from typing import Any

from training.bundle_store import get_field, get_number
from training.timeline import InputError


@dataclass(frozen=True)
class ClockSegment:
    start: float
    end: float
    offset_s: float
    drift_ppm: float
    at: float

    def offset_at(self, server: float) -> float:
        return self.offset_s + self.drift_ppm * 1e-6 * (server - self.at)


@dataclass(frozen=True)
class DeviceClock:
    segments: tuple[ClockSegment, ...]

    def _segment(self, server: float) -> ClockSegment:
        index = bisect_right([s.start for s in self.segments], server) - 1
        return self.segments[max(0, min(len(self.segments) - 1, index))]

    def to_server(self, device: float) -> float:
        """Solve s = t - offset(s) as docs/session-bundle.md says (two fixed-point steps)."""
        first = self._segment(device - self.segments[0].offset_s)
        server = device - first.offset_s
        for _ in range(2):
            server = device - self._segment(server).offset_at(server)
        return server


def read_clock(device: dict[str, Any], where: str) -> tuple[DeviceClock, dict[str, Any]]:
    clock = get_field(device, "clock", dict, where)
    raw = get_field(clock, "segments", list, f"{where}.clock")
    if not raw:
        raise InputError(f"{where}.clock: no segments")
    keys = ("start", "end", "offset_s", "drift_ppm", "at")
    segments = [
        ClockSegment(*(get_number(seg, key, f"{where}.clock.segments[{i}]") for key in keys))
        for i, seg in enumerate(raw)
    ]
    segments.sort(key=lambda s: s.start)
    middle = (segments[0].start + segments[-1].end) / 2
    clock_map = DeviceClock(tuple(segments))
    held = clock_map._segment(middle)
    uncertain = [seg.get("uncertainty_s") for seg in raw]
    report = {
        "method": str(clock.get("method", "")),
        "segments": len(segments),
        "offset_s": held.offset_at(middle),  # at the middle of the segments' span
        "drift_ppm": held.drift_ppm,
        "uncertainty_s": None if None in uncertain else max(float(u) for u in uncertain),
    }
    return clock_map, report
