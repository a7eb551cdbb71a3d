"""The coverage map's view model and its SVG partial, from Device objects that never touch the
database: the map is a pure function of the devices it is given."""

from __future__ import annotations

import math
import re
import uuid
from typing import Any

import pytest
from django.template.loader import render_to_string

from devices.models import Device
from director import coverage
from director.coverage_map import (
    CAM_MAX_R,
    RING_R,
    MapCamera,
    arc_path,
    build_coverage_map,
    cone_path,
    effective_hfov_deg,
    label_dy,
)
from tests.support.api import IPHONE_LENSES


def _device(name: str = "Cam", azimuth: float | None = 0.0, **fields: Any) -> Device:
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "name": name,
        "kind": Device.Kind.IPHONE,
        "status": Device.Status.ONLINE,
        "lenses": IPHONE_LENSES,
        "lens": "wide",
        "zoom": 1.0,
        "orientation": Device.Orientation.LANDSCAPE_LEFT,
        "azimuth_deg": azimuth,
        "distance_m": 3.0,
    }
    values.update(fields)
    return Device(**values)


def _only_camera(device: Device) -> MapCamera:
    (camera,) = build_coverage_map([device]).cameras
    return camera


def _apex_angle_deg(path: str) -> float:
    """The opening angle of a wedge drawn by cone_path, read back from its SVG."""
    numbers = [float(n) for n in re.findall(r"-?\d+\.\d+", path)]
    apex = (0.0, numbers[0])
    right = (numbers[1], numbers[2])
    left = (numbers[-2], numbers[-1])
    a = math.atan2(right[0] - apex[0], right[1] - apex[1])
    b = math.atan2(left[0] - apex[0], left[1] - apex[1])
    return math.degrees(abs(a - b))


def _render(devices: list[Device], *, oob: bool = False) -> str:
    return render_to_string(
        "director/partials/coverage_map.html",
        {"coverage": build_coverage_map(devices), "oob": "true" if oob else ""},
    )


def test_digital_zoom_narrows_the_field_of_view_of_the_active_lens() -> None:
    # 2x on the 1x wide lens is 2x digital: tan(hfov/2) halves.
    device = _device(zoom=2.0)
    expected = math.degrees(2 * math.atan(math.tan(math.radians(73.0 / 2)) / 2))
    assert effective_hfov_deg(device) == pytest.approx(expected)
    assert effective_hfov_deg(_device(lens="tele", zoom=3.0)) == pytest.approx(27.0)
    assert effective_hfov_deg(_device(lens="ultra_wide", zoom=0.5)) == pytest.approx(106.0)


def test_a_camera_without_a_reported_lens_has_no_cone_and_no_shot_size() -> None:
    camera = _only_camera(_device(lens="", zoom=None))
    assert camera.hfov_deg is None and camera.shot is None
    assert camera.cone == ""
    assert camera.detail == "no lens"


def test_the_cone_opens_as_wide_as_the_lens_sees_and_points_at_the_subject() -> None:
    camera = _only_camera(_device(lens="tele", zoom=3.0))
    assert camera.cone_deg == pytest.approx(27.0)
    assert _apex_angle_deg(camera.cone) == pytest.approx(27.0, abs=0.1)
    # In the camera's own frame it stands at (0, -r) and the wedge reaches past the subject.
    assert camera.cone.startswith(f"M 0 -{camera.radius:.2f} ")
    assert _apex_angle_deg(cone_path(100.0, 73.0)) == pytest.approx(73.0, abs=0.1)


def test_held_upright_the_floor_sees_the_narrow_side_of_the_frame() -> None:
    landscape = _only_camera(_device(distance_m=1.5))
    portrait = _only_camera(_device(distance_m=1.5, orientation=Device.Orientation.PORTRAIT))
    upside_down = _only_camera(
        _device(distance_m=1.5, orientation=Device.Orientation.PORTRAIT_UPSIDE_DOWN)
    )
    assert landscape.cone_deg == pytest.approx(73.0)
    assert portrait.cone_deg is not None and portrait.cone_deg < 50
    assert upside_down.cone_deg == pytest.approx(portrait.cone_deg)
    # ...and the tall frame holds the whole body from where a landscape frame holds half.
    assert (landscape.shot, portrait.shot) == ("medium", "full")


@pytest.mark.parametrize(
    ("distance", "lens", "zoom", "expected"),
    [
        (3.0, "wide", 1.0, "full"),
        (1.5, "wide", 1.0, "medium"),
        (1.5, "tele", 3.0, "close"),
        (3.0, "wide", 4.0, "close"),  # 4x digital on the wide lens: as narrow as a tele
        (4.0, "ultra_wide", 0.5, "full"),
    ],
)
def test_shot_size_follows_distance_and_the_zoomed_field_of_view(
    distance: float, lens: str, zoom: float, expected: str
) -> None:
    camera = _only_camera(_device(distance_m=distance, lens=lens, zoom=zoom))
    assert camera.shot == expected
    assert camera.detail.startswith(expected)
    assert f"{expected} shot" in camera.aria_label


def test_without_a_distance_the_shot_size_is_unknown_and_the_marker_says_so() -> None:
    camera = _only_camera(_device(distance_m=None))
    assert camera.shot is None
    assert camera.radius == CAM_MAX_R
    assert "distance not set" in camera.aria_label
    assert camera.detail == "no distance · 1x"


def test_distances_are_drawn_to_scale_and_azimuths_exactly() -> None:
    near = _device("Near", azimuth=123.45, distance_m=2.0)
    far = _device("Far", azimuth=300.0, distance_m=6.0)
    cameras = {c.name: c for c in build_coverage_map([near, far]).cameras}
    assert cameras["Far"].radius == pytest.approx(CAM_MAX_R)
    assert cameras["Near"].radius == pytest.approx(CAM_MAX_R / 3)
    assert cameras["Near"].azimuth_attr == "123.45"
    assert cameras["Near"].rotate == "123.45"
    assert cameras["Near"].counter_rotate == "-123.45"
    assert cameras["Near"].azimuth_label == "123°"


def test_the_largest_gaps_are_labelled_largest_first_and_at_most_three() -> None:
    two = build_coverage_map([_device("A", 0.0), _device("B", 90.0)])
    assert [(g.start_deg, g.size_deg, g.label) for g in two.gaps] == [
        (120.0, 210.0, "210° gap"),
        (30.0, 30.0, "30° gap"),
    ]
    assert two.largest_gap is not None and two.largest_gap.middle_deg == 225.0
    five = build_coverage_map([_device(str(a), a) for a in (0.0, 70.0, 140.0, 210.0, 280.0)])
    assert len(coverage.gaps([0, 70, 140, 210, 280])) == 5
    assert [g.size_attr for g in five.gaps] == ["20", "10", "10"]


def test_a_ring_with_no_camera_is_one_open_gap_and_a_closed_ring_has_none() -> None:
    empty = build_coverage_map([])
    assert [g.label for g in empty.gaps] == ["no coverage"]
    assert empty.gaps[0].size_attr == "360"
    closed = build_coverage_map([_device(str(a), a) for a in range(0, 360, 60)])
    assert closed.gaps == [] and closed.fully_covered


def test_webcams_are_drawn_but_never_count_toward_coverage() -> None:
    phone = _device("Phone", 0.0)
    webcam = _device("Webcam", 180.0, kind=Device.Kind.WEBCAM)
    with_webcam = build_coverage_map([phone, webcam])
    without = build_coverage_map([phone])
    assert with_webcam.gaps == without.gaps
    assert with_webcam.coverage_cameras == 1
    assert {c.kind for c in with_webcam.cameras} == {"iphone", "webcam"}


def test_unplaced_online_cameras_are_listed_with_where_they_would_go() -> None:
    placed = _device("Placed", 0.0)
    waiting = _device("Waiting", None)
    gone = _device("Gone", None, status=Device.Status.OFFLINE)
    webcam = _device("Webcam", None, kind=Device.Kind.WEBCAM)
    result = build_coverage_map([placed, waiting, gone, webcam])
    assert [(c.name, c.kind) for c in result.unplaced] == [
        ("Waiting", "iphone"),
        ("Webcam", "webcam"),
    ]
    # One camera at the front: the open arc runs 30° to 330°, its middle is behind.
    assert result.suggestion_deg == 180
    assert result.suggestion_reason == "the middle of the largest gap"


def test_offline_cameras_are_drawn_dimmed_without_a_cone_and_cover_nothing() -> None:
    offline = _device("Asleep", 90.0, status=Device.Status.OFFLINE)
    online = _device("Awake", 0.0)
    result = build_coverage_map([online, offline])
    asleep = next(c for c in result.cameras if c.name == "Asleep")
    assert not asleep.online and asleep.cone == "" and asleep.detail == "offline"
    assert result.cameras[0] is asleep  # drawn first, under the live ones
    assert result.gaps == build_coverage_map([online]).gaps


def test_the_partial_draws_focusable_markers_gaps_and_the_front() -> None:
    live = _device("Cam Live", 90.0, tally=Device.Tally.LIVE, flip_horizontal=True)
    preview = _device("Cam Preview", 270.0, tally=Device.Tally.PREVIEW, flip_vertical=True)
    html = _render([live, preview, _device("Cam New", None)], oob=True)
    assert 'id="coverage-map"' in html and 'hx-swap-oob="true"' in html
    assert html.count('class="coverage-front"') == 1
    marker = re.search(rf'<g id="coverage-{live.pk}-camera"[^>]*>', html)
    assert marker is not None
    tag = marker.group(0)
    for attribute in (
        f'data-device-id="{live.pk}"',
        'data-azimuth="90"',
        'data-kind="iphone"',
        'tabindex="0"',
        'role="slider"',
        'aria-valuenow="90"',
        'transform="rotate(90.00)"',
        f'data-place-url="/registry/devices/{live.pk}/place"',
    ):
        assert attribute in tag
    assert "cam-tally-live" in tag
    assert 'aria-label="Cam Live, at 90°, full shot, 3 m away, tally live, flipped' in tag
    assert "cam-tally-preview" in html
    assert "full · 1x · ↔" in html and "full · 1x · ↕" in html
    assert 'data-gap-deg="120"' in html and "120° gap" in html
    # Cameras at both sides leave two equal gaps; the first clockwise from the front wins.
    assert "Place at 180°" in html
    assert 'data-largest-gap="120"' in html


def test_the_partial_without_oob_is_what_an_htmx_answer_swaps_in() -> None:
    html = _render([_device()])
    assert "hx-swap-oob" not in html
    assert 'data-refresh-url="/registry/coverage"' in html


def test_labels_sit_above_cameras_in_front_and_below_the_others() -> None:
    assert label_dy(0) < 0 and label_dy(330) < 0
    assert label_dy(90) > 0 and label_dy(180) > 0 and label_dy(270) > 0


def test_gap_arcs_run_clockwise_and_a_whole_ring_is_drawn_as_two_halves() -> None:
    assert arc_path(90, 90, 100) == "M 100.00 0.00 A 100.00 100.00 0 0 1 0.00 100.00"
    assert " 0 1 1 " in arc_path(10, 200, 100)  # the large-arc flag past 180°
    whole = arc_path(0, 360, RING_R)
    assert whole.count(" A ") == 2 and whole.startswith(f"M 0.00 -{RING_R:.2f}")
