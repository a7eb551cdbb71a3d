"""The coverage map's view model: where each camera stands around the subject, what its lens
sees, and which viewing angles nobody covers. A pure function over Device objects; the
template draws it as SVG, and the page's script only moves markers while the operator drags.

Geometry of the drawing (SVG user units, the subject at 0,0): azimuth 0 (the subject's front)
points up, azimuths grow clockwise as on the floor seen from above, so a point at azimuth `a`
and radius `r` is (r·sin a, -r·cos a). Each camera is drawn in its own frame, rotated by its
azimuth: it stands at (0, -r) and looks down the +y axis at the subject. Dragging therefore
only rewrites that rotation (and turns the label back upright), and the azimuth drawn is
exactly the stored one.

Rules, applied the same way everywhere:
- an online, placed camera gets a marker and the view cone of its current lens;
- an offline, placed camera is drawn dimmed where it stood, without a cone, and covers nothing;
- an online camera without a placement is listed as "not placed"; an offline one is omitted
  (there is nothing to draw and nothing to do with it until it is back);
- webcams are drawn and listed (the page hides them unless asked), but never count toward
  coverage: they are not photoshoot cameras.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

from devices.models import Device
from director import coverage, dom, selectors

VIEW_HALF = 228.0  # the viewBox is a square of this half-width around the subject
RING_R = 172.0  # the outer ring: angle ticks and gap arcs
CAM_MAX_R = 148.0  # the farthest camera is drawn here
CAM_MIN_R = 40.0  # closer than this a marker would sit on the subject
SUBJECT_R = 20.0
LABEL_OFFSET = 36.0  # a camera's label sits this far above or below its marker
LABEL_ABOVE_COS = 0.3  # above when the camera is in the front part of the ring
GAP_LABEL_R = RING_R + 25.0
MIN_SCALE_M = 4.0  # a single camera at 1 m is still drawn near the subject, not on the ring
SCALE_STEPS_M = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0)
MAX_SCALE_RINGS = 5
MAX_GAPS = 3
MIN_GAP_DEG = 1.0  # rounding slivers are not gaps worth showing
MAX_CONE_HALF_DEG = 80.0  # wider than this the wedge degenerates into a half-plane
PORTRAIT = {Device.Orientation.PORTRAIT, Device.Orientation.PORTRAIT_UPSIDE_DOWN}


def _num(value: float) -> str:
    # SVG attributes: fixed notation, a dot for decimals whatever the locale, no "-0.00".
    text = f"{value:.2f}"
    return "0.00" if text == "-0.00" else text


def _point(azimuth_deg: float, radius: float) -> tuple[float, float]:
    a = math.radians(azimuth_deg)
    return radius * math.sin(a), -radius * math.cos(a)


def _degrees_label(value: float) -> str:
    return f"{round(value) % 360}°"


def label_dy(azimuth_deg: float) -> float:
    """Where a camera's label goes, upright, relative to its marker: above it towards the
    front, below it elsewhere. Centred on the marker, it never runs off the sides of the map
    (static/director/coverage.js repeats this while a marker is dragged)."""
    above = math.cos(math.radians(azimuth_deg)) > LABEL_ABOVE_COS
    return -LABEL_OFFSET if above else LABEL_OFFSET


def effective_hfov_deg(device: Device) -> float | None:
    """The horizontal field of view of the active lens (across the sensor's long side) after
    digital zoom.

    Digital zoom is the reported zoom over the active lens's native zoom; it narrows the field
    as 2·atan(tan(hfov/2) / digital), the same rule as the lens plan.
    """
    native = device.lens_hfov_deg()
    if native is None:
        return None
    lens = next(lens for lens in device.lenses if lens["id"] == device.lens)
    native_zoom = float(lens.get("zoom") or 0)
    digital = 1.0
    if device.zoom and native_zoom > 0:
        digital = max(1.0, float(device.zoom) / native_zoom)
    half = math.radians(native) / 2
    return math.degrees(2 * math.atan(math.tan(half) / digital))


def cone_hfov_deg(hfov_deg: float, *, portrait: bool) -> float:
    """The angle the camera sees on the floor plan. Held upright, the sensor's short side is
    horizontal, so the floor sees the narrower of the two fields of view."""
    if not portrait:
        return hfov_deg
    half = math.radians(hfov_deg) / 2
    return math.degrees(2 * math.atan(math.tan(half) / coverage.ASPECT_LANDSCAPE))


def cone_path(radius: float, cone_deg: float) -> str:
    """A wedge in the camera's own frame: apex at the camera (0, -radius), opening towards the
    subject and reaching just past it."""
    half = math.radians(min(cone_deg / 2, MAX_CONE_HALF_DEG))
    length = radius + SUBJECT_R
    apex_y = -radius
    x = length * math.sin(half)
    y = apex_y + length * math.cos(half)
    # From the right edge to the left one along the far arc: clockwise on screen (sweep 1).
    return (
        f"M 0 {_num(apex_y)} L {_num(x)} {_num(y)} "
        f"A {_num(length)} {_num(length)} 0 0 1 {_num(-x)} {_num(y)} Z"
    )


def arc_path(start_deg: float, size_deg: float, radius: float) -> str:
    """A clockwise arc of the ring; a whole-ring arc is drawn as two halves (SVG cannot draw an
    arc whose ends meet)."""
    if size_deg >= 360 - 1e-6:
        x0, y0 = _point(0, radius)
        x1, y1 = _point(180, radius)
        r = _num(radius)
        return (
            f"M {_num(x0)} {_num(y0)} A {r} {r} 0 1 1 {_num(x1)} {_num(y1)} "
            f"A {r} {r} 0 1 1 {_num(x0)} {_num(y0)}"
        )
    x0, y0 = _point(start_deg, radius)
    x1, y1 = _point(start_deg + size_deg, radius)
    large = 1 if size_deg > 180 else 0
    r = _num(radius)
    return f"M {_num(x0)} {_num(y0)} A {r} {r} 0 {large} 1 {_num(x1)} {_num(y1)}"


@dataclass(frozen=True)
class MapCamera:
    device_id: str
    dom_id: str
    name: str
    kind: str
    online: bool
    azimuth_deg: float
    distance_m: float | None
    height_m: float | None
    radius: float  # SVG units from the subject
    hfov_deg: float | None  # the lens's field after digital zoom (landscape)
    cone_deg: float | None  # what the floor plan sees (narrower in portrait)
    zoom: float | None
    shot: str | None  # full, medium, close; None without a distance or a lens
    portrait: bool
    flip_horizontal: bool
    flip_vertical: bool
    tally: str

    @property
    def azimuth_attr(self) -> str:
        return f"{self.azimuth_deg:g}"

    @property
    def azimuth_label(self) -> str:
        return _degrees_label(self.azimuth_deg)

    @property
    def azimuth_value(self) -> int:
        return round(self.azimuth_deg) % 360

    @property
    def distance_value(self) -> str:
        return "" if self.distance_m is None else f"{self.distance_m:g}"

    @property
    def height_value(self) -> str:
        return "" if self.height_m is None else f"{self.height_m:g}"

    @property
    def rotate(self) -> str:
        return _num(self.azimuth_deg)

    @property
    def counter_rotate(self) -> str:
        return _num(-self.azimuth_deg)

    @property
    def radius_attr(self) -> str:
        return _num(self.radius)

    @property
    def body_y(self) -> str:
        return _num(-self.radius)

    @property
    def label_dy(self) -> str:
        return _num(label_dy(self.azimuth_deg))

    @property
    def cone(self) -> str:
        if not self.online or self.cone_deg is None:
            return ""
        return cone_path(self.radius, self.cone_deg)

    @property
    def flip_marks(self) -> str:
        return ("↔" if self.flip_horizontal else "") + ("↕" if self.flip_vertical else "")

    @property
    def zoom_label(self) -> str:
        return "" if self.zoom is None else f"{self.zoom:g}x"

    @property
    def shot_label(self) -> str:
        if not self.online:
            return "offline"
        if self.shot is not None:
            return f"{self.shot} shot"
        if self.distance_m is None:
            return "distance not set"
        return "lens unknown"

    @property
    def detail(self) -> str:
        """The marker's second line: shot size, zoom and flip, as short as it can be."""
        if not self.online:
            parts = ["offline"]
        else:
            parts = [self.shot or ("no distance" if self.distance_m is None else "no lens")]
            if self.zoom_label:
                parts.append(self.zoom_label)
        if self.flip_marks:
            parts.append(self.flip_marks)
        return " · ".join(parts)

    @property
    def aria_label(self) -> str:
        words = [self.name, f"at {self.azimuth_label}", self.shot_label]
        if self.distance_m is not None:
            words.append(f"{self.distance_m:g} m away")
        if self.tally != Device.Tally.OFF:
            words.append(f"tally {self.tally}")
        if self.flip_horizontal:
            words.append("flipped horizontally")
        if self.flip_vertical:
            words.append("flipped vertically")
        return ", ".join(words)


@dataclass(frozen=True)
class UnplacedCamera:
    device_id: str
    name: str
    kind: str


@dataclass(frozen=True)
class MapGap:
    start_deg: float
    size_deg: float

    @property
    def middle_deg(self) -> float:
        return (self.start_deg + self.size_deg / 2) % 360

    @property
    def size_attr(self) -> str:
        return str(round(self.size_deg))

    @property
    def label(self) -> str:
        if self.size_deg >= 360 - 1e-6:
            return "no coverage"
        return f"{round(self.size_deg)}° gap"

    @property
    def path(self) -> str:
        return arc_path(self.start_deg, self.size_deg, RING_R)

    @property
    def label_x(self) -> str:
        return _num(_point(self.middle_deg, GAP_LABEL_R)[0])

    @property
    def label_y(self) -> str:
        # A little lower than the point: SVG places text on its baseline.
        return _num(_point(self.middle_deg, GAP_LABEL_R)[1] + 4)


@dataclass(frozen=True)
class ScaleRing:
    distance_m: float
    radius: float

    @property
    def r(self) -> str:
        return _num(self.radius)

    @property
    def label(self) -> str:
        return f"{self.distance_m:g} m"

    @property
    def label_x(self) -> str:
        return _num(_point(135, self.radius)[0] + 3)

    @property
    def label_y(self) -> str:
        return _num(_point(135, self.radius)[1] - 3)


@dataclass(frozen=True)
class Tick:
    x1: str
    y1: str
    x2: str
    y2: str
    major: bool


@dataclass(frozen=True)
class CoverageMap:
    cameras: list[MapCamera]
    unplaced: list[UnplacedCamera]
    gaps: list[MapGap]
    scale_rings: list[ScaleRing]
    suggestion_deg: int  # where a camera placed from the "not placed" list goes
    coverage_cameras: int  # online, placed, not webcams: what the gaps are computed from

    dom_id: ClassVar[str] = dom.COVERAGE_MAP
    view_box: ClassVar[str] = f"{-VIEW_HALF:g} {-VIEW_HALF:g} {2 * VIEW_HALF:g} {2 * VIEW_HALF:g}"
    ring_r: ClassVar[str] = _num(RING_R)
    subject_r: ClassVar[str] = _num(SUBJECT_R)
    front_mark_y: ClassVar[str] = _num(RING_R + 12)
    label_offset: ClassVar[str] = f"{LABEL_OFFSET:g}"
    label_above_cos: ClassVar[str] = f"{LABEL_ABOVE_COS:g}"

    @property
    def largest_gap(self) -> MapGap | None:
        return self.gaps[0] if self.gaps else None

    @property
    def suggestion_reason(self) -> str:
        return "the middle of the largest gap" if self.gaps else "the subject's front"

    @property
    def fully_covered(self) -> bool:
        return self.coverage_cameras > 0 and not self.gaps

    @property
    def ticks(self) -> list[Tick]:
        found = []
        for azimuth in range(0, 360, 15):
            major = azimuth % 90 == 0
            inner = RING_R - (9 if major else 5)
            x1, y1 = _point(azimuth, inner)
            x2, y2 = _point(azimuth, RING_R)
            found.append(Tick(_num(x1), _num(y1), _num(x2), _num(y2), major))
        return found


def _scale_m(cameras: Iterable[Device]) -> float:
    distances = [d.distance_m for d in cameras if d.distance_m is not None]
    return max([MIN_SCALE_M, *distances])


def _scale_rings(scale_m: float) -> list[ScaleRing]:
    step = next((s for s in SCALE_STEPS_M if scale_m / s <= MAX_SCALE_RINGS), SCALE_STEPS_M[-1])
    rings = []
    k = 1
    while k * step <= scale_m + 1e-9:
        radius = k * step / scale_m * CAM_MAX_R
        if radius >= CAM_MIN_R - 4:
            rings.append(ScaleRing(distance_m=k * step, radius=radius))
        k += 1
    return rings


def _map_camera(device: Device, scale_m: float) -> MapCamera:
    assert device.azimuth_deg is not None
    if device.distance_m is None:
        radius = CAM_MAX_R
    else:
        radius = max(CAM_MIN_R, min(CAM_MAX_R, device.distance_m / scale_m * CAM_MAX_R))
    portrait = device.orientation in PORTRAIT
    hfov = effective_hfov_deg(device)
    shot = None
    if hfov is not None and device.distance_m is not None:
        view = coverage.CameraView(
            azimuth_deg=device.azimuth_deg,
            distance_m=device.distance_m,
            hfov_deg=hfov,
            portrait=portrait,
        )
        shot = coverage.shot_size(view)
    return MapCamera(
        device_id=str(device.pk),
        dom_id=dom.coverage_camera_id(device.pk),
        name=device.name,
        kind=device.kind,
        online=device.is_online,
        azimuth_deg=float(device.azimuth_deg),
        distance_m=device.distance_m,
        height_m=device.height_m,
        radius=radius,
        hfov_deg=hfov,
        cone_deg=None if hfov is None else cone_hfov_deg(hfov, portrait=portrait),
        zoom=device.zoom,
        shot=shot,
        portrait=portrait,
        flip_horizontal=device.flip_horizontal,
        flip_vertical=device.flip_vertical,
        tally=device.tally or Device.Tally.OFF,
    )


def build_coverage_map(devices: Iterable[Device]) -> CoverageMap:
    devices = list(devices)
    placed = [d for d in devices if d.is_placed]
    scale_m = _scale_m(placed)
    # Offline cameras first, so the live ones (and their cones) are drawn on top of them.
    cameras = [_map_camera(d, scale_m) for d in sorted(placed, key=lambda d: (d.is_online, d.name))]
    counted = [c.azimuth_deg for c in cameras if c.online and c.kind != Device.Kind.WEBCAM]
    open_arcs = [arc for arc in coverage.gaps(counted) if arc.size_deg >= MIN_GAP_DEG]
    gaps = [MapGap(arc.start_deg, arc.size_deg) for arc in open_arcs[:MAX_GAPS]]
    unplaced = [
        UnplacedCamera(device_id=str(d.pk), name=d.name, kind=d.kind)
        for d in devices
        if d.is_online and not d.is_placed
    ]
    suggestion = round(gaps[0].middle_deg) % 360 if gaps else 0
    return CoverageMap(
        cameras=cameras,
        unplaced=unplaced,
        gaps=gaps,
        scale_rings=_scale_rings(scale_m),
        suggestion_deg=suggestion,
        coverage_cameras=len(counted),
    )


def current_coverage_map() -> CoverageMap:
    """The map of every registered device, as the registry page shows it."""
    return build_coverage_map(selectors.registry_devices())
