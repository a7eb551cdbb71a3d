from __future__ import annotations

import pytest

from director.coverage import Arc, CameraView, covered_arcs, frame_height_m, gaps, shot_size


def test_four_cameras_ninety_degrees_apart_leave_four_thirty_degree_gaps() -> None:
    found = gaps([0, 90, 180, 270], half_arc_deg=30)
    assert [round(g.size_deg, 6) for g in found] == [30.0] * 4
    assert sorted(round(g.start_deg, 6) for g in found) == [30.0, 120.0, 210.0, 300.0]


def test_the_largest_gap_comes_first_and_knows_its_middle() -> None:
    # Cameras in front and to the sides: the back (behind the subject) is open.
    found = gaps([300, 0, 60], half_arc_deg=30)
    assert found[0] == Arc(start_deg=90.0, size_deg=180.0)
    assert found[0].middle_deg == 180.0
    assert len(found) == 1


def test_arcs_that_wrap_past_north_merge() -> None:
    covered = covered_arcs([350, 10], half_arc_deg=30)
    assert covered == [Arc(start_deg=320.0, size_deg=80.0)]  # 320..20 and 340..40
    assert gaps([350, 10], half_arc_deg=30) == [Arc(start_deg=40.0, size_deg=280.0)]


def test_no_camera_leaves_the_whole_ring_open_and_enough_cameras_close_it() -> None:
    assert gaps([]) == [Arc(0.0, 360.0)]
    assert gaps([0, 60, 120, 180, 240, 300], half_arc_deg=30) == []
    assert covered_arcs([0, 60, 120, 180, 240, 300], half_arc_deg=30) == [Arc(0.0, 360.0)]


def test_moving_a_camera_into_a_gap_shrinks_it() -> None:
    before = gaps([0, 90, 270], half_arc_deg=30)[0]
    after = gaps([0, 90, 180], half_arc_deg=30)[0]
    assert before.size_deg == 120.0 and before.middle_deg == 180.0
    assert after.size_deg == 120.0 and after.middle_deg == 270.0
    assert gaps([0, 90, 180, 270], half_arc_deg=30)[0].size_deg == 30.0


@pytest.mark.parametrize(
    ("distance", "hfov", "portrait", "expected"),
    [
        (3.0, 73.0, False, "full"),  # 1x from 3 m, landscape: frame ~2.5 m tall
        (1.5, 73.0, False, "medium"),
        (1.5, 27.0, False, "close"),  # 3x tele from 1.5 m
        (1.5, 73.0, True, "full"),  # portrait: the long side is vertical
        (4.0, 106.0, False, "full"),  # ultra-wide
    ],
)
def test_shot_size_from_distance_and_field_of_view(
    distance: float, hfov: float, portrait: bool, expected: str
) -> None:
    assert shot_size(CameraView(0.0, distance, hfov, portrait)) == expected


def test_frame_height_grows_with_distance() -> None:
    near = frame_height_m(CameraView(0.0, 1.0, 73.0))
    far = frame_height_m(CameraView(0.0, 2.0, 73.0))
    assert far == pytest.approx(2 * near)
    assert near == pytest.approx(2 * 1.0 * (0.7399 / (16 / 9)), rel=1e-3)
