"""Coverage geometry: which viewing angles around the subject the cameras cover, the gaps
between them, and the shot size each camera gets. Pure functions; the map and Ghost's
coverage-gap policy read them.

Angles are azimuths in degrees, 0 = the subject's front, clockwise seen from above, as in the
contract. A camera at azimuth `a` stands in for the viewpoints within `half_arc_deg` of `a`:
seen from closer than that, a second camera adds little; a gap is a run of viewpoints no
camera stands in for.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_HALF_ARC_DEG = 30.0
# Frame heights at the subject that still hold a full body, a medium (waist-up) and a close
# (head and shoulders) shot, in metres, for a subject of about 1.8 m.
FULL_SHOT_M = 1.9
MEDIUM_SHOT_M = 0.9
# Phones film 16:9 (or 4:3 stills); the vertical field of view follows from the horizontal.
ASPECT_LANDSCAPE = 16 / 9


@dataclass(frozen=True)
class CameraView:
    azimuth_deg: float
    distance_m: float
    hfov_deg: float
    portrait: bool = False


@dataclass(frozen=True)
class Arc:
    start_deg: float  # clockwise from here...
    size_deg: float  # ...for this many degrees

    @property
    def end_deg(self) -> float:
        return (self.start_deg + self.size_deg) % 360

    @property
    def middle_deg(self) -> float:
        return (self.start_deg + self.size_deg / 2) % 360


def normalize(angle: float) -> float:
    return angle % 360.0


def covered_arcs(
    azimuths: Sequence[float], *, half_arc_deg: float = DEFAULT_HALF_ARC_DEG
) -> list[Arc]:
    """The covered viewpoints as disjoint arcs, merged where cameras overlap."""
    if not azimuths:
        return []
    if half_arc_deg >= 180:
        return [Arc(0.0, 360.0)]
    spans = sorted((normalize(a - half_arc_deg), 2 * half_arc_deg) for a in azimuths)
    merged: list[list[float]] = []
    for start, size in spans:
        if merged and start <= merged[-1][0] + merged[-1][1] + 1e-9:
            end = max(merged[-1][0] + merged[-1][1], start + size)
            merged[-1][1] = end - merged[-1][0]
        else:
            merged.append([start, size])
    # The last arc may run past 360 into the first one.
    if len(merged) > 1 and merged[-1][0] + merged[-1][1] >= 360 + merged[0][0] - 1e-9:
        last = merged.pop()
        first = merged[0]
        end = max(last[0] + last[1], 360 + first[0] + first[1])
        merged[0] = [last[0], end - last[0]]
    arcs = [Arc(normalize(start), min(360.0, size)) for start, size in merged]
    if any(arc.size_deg >= 360 - 1e-9 for arc in arcs):
        return [Arc(0.0, 360.0)]
    return sorted(arcs, key=lambda arc: arc.start_deg)


def gaps(azimuths: Sequence[float], *, half_arc_deg: float = DEFAULT_HALF_ARC_DEG) -> list[Arc]:
    """Uncovered arcs, largest first. No camera at all: the whole ring is one gap."""
    covered = covered_arcs(azimuths, half_arc_deg=half_arc_deg)
    if not covered:
        return [Arc(0.0, 360.0)]
    if covered[0].size_deg >= 360:
        return []
    found = []
    for arc, following in zip(covered, covered[1:] + covered[:1], strict=True):
        size = (following.start_deg - arc.end_deg) % 360
        if size > 1e-9:
            found.append(Arc(arc.end_deg, size))
    return sorted(found, key=lambda arc: (-arc.size_deg, arc.start_deg))


def frame_height_m(view: CameraView) -> float:
    """How tall the frame is at the subject's distance."""
    half_h = math.radians(view.hfov_deg) / 2
    if view.portrait:
        # Held upright, the long side of the sensor is vertical: the reported horizontal
        # field of view becomes the vertical one.
        return 2 * view.distance_m * math.tan(half_h)
    half_v = math.atan(math.tan(half_h) / ASPECT_LANDSCAPE)
    return 2 * view.distance_m * math.tan(half_v)


def shot_size(view: CameraView) -> str:
    height = frame_height_m(view)
    if height >= FULL_SHOT_M:
        return "full"
    if height >= MEDIUM_SHOT_M:
        return "medium"
    return "close"
