"""One device's clock mapped onto the server's for a whole session, from its round trips.

The live fit (devices/services/clocks.py) looks at the last half hour to say what the offset is
*now*. An export knows the whole session, so it fits the samples around each part of it:

- the session's span (plus `MARGIN_S` either side) is cut into equal segments of at most
  `SEGMENT_S`; each segment is fitted (offset and drift, low-delay exchanges weighted most)
  over its own samples and `MARGIN_S` of its neighbours';
- a segment with too few samples uses the fit over the whole span; a span with too few for a
  fit uses its lowest-delay sample (a constant offset); a device with no sample in the span
  uses the estimate it carries now; with none of these, its clock is taken as the server's
  and the map says so (`method: "none"`).

A device time `t` maps to the server time `s` that solves `s = t - offset(s)`: two fixed-point
steps from `t - offset_s` (drift is parts per million, so the second step changes nothing
measurable).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

from devices import clock

SEGMENT_S = clock.FIT_WINDOW_S
MARGIN_S = 300.0


@dataclass(frozen=True)
class Segment:
    """From `start` to `end` (server clock, unix s): offset(s) = offset_s + drift (s - at)."""

    start: float
    end: float
    offset_s: float
    drift_ppm: float
    at: float
    uncertainty_s: float | None
    samples: int
    best_delay_s: float | None
    method: str  # fit | span_fit | best_sample | device_estimate | none

    def offset_at(self, server_unix: float) -> float:
        return self.offset_s + self.drift_ppm * 1e-6 * (server_unix - self.at)

    def as_json(self) -> dict[str, object]:
        return {
            "start": round(self.start, 6),
            "end": round(self.end, 6),
            "offset_s": round(self.offset_s, 9),
            "drift_ppm": round(self.drift_ppm, 6),
            "at": round(self.at, 6),
            "uncertainty_s": None if self.uncertainty_s is None else round(self.uncertainty_s, 9),
            "samples": self.samples,
            "best_delay_s": None if self.best_delay_s is None else round(self.best_delay_s, 9),
            "method": self.method,
        }


def _measured_at(sample: clock.Sample) -> float:
    return (sample.received_at + sample.server_time) / 2


def _from_fit(fitted: clock.Fit, start: float, end: float, method: str) -> Segment:
    return Segment(
        start=start,
        end=end,
        offset_s=fitted.offset_s,
        drift_ppm=fitted.drift_ppm,
        at=fitted.at,
        uncertainty_s=fitted.uncertainty_s,
        samples=fitted.samples,
        best_delay_s=fitted.best_delay_s,
        method=method,
    )


@dataclass(frozen=True)
class ClockMap:
    segments: tuple[Segment, ...]

    @property
    def method(self) -> str:
        methods = sorted({s.method for s in self.segments})
        return methods[0] if len(methods) == 1 else "+".join(methods)

    def segment_for(self, server_unix: float) -> Segment:
        starts = [s.start for s in self.segments]
        index = max(0, min(len(self.segments) - 1, bisect_right(starts, server_unix) - 1))
        return self.segments[index]

    def to_server(self, device_unix: float) -> float:
        first = self.segment_for(device_unix - self.segments[0].offset_s)
        server = device_unix - first.offset_s
        for _ in range(2):
            server = device_unix - self.segment_for(server).offset_at(server)
        return server

    @classmethod
    def build(
        cls,
        samples: Sequence[clock.Sample],
        *,
        start: float,
        end: float,
        device_estimate_s: float | None,
    ) -> ClockMap:
        """Fit `samples` (any order) over [start, end] of server time, as the module says."""
        end = max(end, start)
        usable = sorted(
            (s for s in samples if 0 <= s.delay_s <= clock.MAX_DELAY_S), key=_measured_at
        )
        whole = clock.fit(usable)
        if whole is None:
            return cls((_fallback(usable, start, end, device_estimate_s),))
        count = max(1, math.ceil((end - start) / SEGMENT_S))
        length = (end - start) / count
        times = [_measured_at(s) for s in usable]
        segments = []
        for i in range(count):
            seg_start = start + i * length
            seg_end = end if i == count - 1 else start + (i + 1) * length
            lo = bisect_right(times, seg_start - MARGIN_S)
            hi = bisect_right(times, seg_end + MARGIN_S)
            fitted = clock.fit(usable[lo:hi]) if count > 1 else whole
            if fitted is None:
                segments.append(_from_fit(whole, seg_start, seg_end, "span_fit"))
            else:
                segments.append(_from_fit(fitted, seg_start, seg_end, "fit"))
        return cls(tuple(segments))


def _fallback(
    usable: Sequence[clock.Sample], start: float, end: float, device_estimate_s: float | None
) -> Segment:
    if usable:
        best = min(usable, key=lambda s: (s.delay_s, _measured_at(s)))
        return Segment(
            start=start,
            end=end,
            offset_s=best.offset_s,
            drift_ppm=0.0,
            at=_measured_at(best),
            uncertainty_s=best.delay_s / 2,
            samples=len(usable),
            best_delay_s=best.delay_s,
            method="best_sample",
        )
    if device_estimate_s is not None:
        return Segment(start, end, device_estimate_s, 0.0, start, None, 0, None, "device_estimate")
    return Segment(start, end, 0.0, 0.0, start, None, 0, None, "none")
