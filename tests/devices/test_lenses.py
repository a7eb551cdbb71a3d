from __future__ import annotations

import math

import pytest

from devices.lenses import LensRefused, lens_plan, zoom_buttons
from tests.support.api import IPHONE_LENSES

IPAD_LENSES = [{"id": "wide", "zoom": 1.0, "hfov_deg": 80.0}]
PRO_MAX_LENSES = [
    {"id": "ultra_wide", "zoom": 0.5, "hfov_deg": 106.0},
    {"id": "wide", "zoom": 1.0, "hfov_deg": 73.0},
    {"id": "tele", "zoom": 5.0, "hfov_deg": 16.0},
]


def test_half_zoom_on_an_iphone_uses_the_ultra_wide() -> None:
    plan = lens_plan(IPHONE_LENSES, 0.5)
    assert (plan.lens, plan.native_zoom, plan.digital_zoom) == ("ultra_wide", 0.5, 1.0)
    assert plan.hfov_deg == 106.0


def test_half_zoom_on_an_ipad_is_refused_never_turned_into_1x() -> None:
    with pytest.raises(LensRefused, match=r"iPad cam has no ultra-wide lens: its widest is 1x"):
        lens_plan(IPAD_LENSES, 0.5, device_name="iPad cam")


@pytest.mark.parametrize(
    ("zoom", "lens", "digital"),
    [
        (1.0, "wide", 1.0),
        (0.7, "ultra_wide", 1.4),
        (2.0, "wide", 2.0),
        (3.0, "tele", 1.0),
        (4.5, "tele", 1.5),
        (2.9999999, "tele", 1.0),  # float noise from the app still picks the tele
    ],
)
def test_the_longest_lens_not_above_the_request_then_digital(
    zoom: float, lens: str, digital: float
) -> None:
    plan = lens_plan(IPHONE_LENSES, zoom)
    assert (plan.lens, plan.digital_zoom) == (lens, digital)
    assert plan.zoom == pytest.approx(zoom, rel=1e-4)


def test_digital_zoom_narrows_the_field_of_view() -> None:
    plan = lens_plan(IPHONE_LENSES, 2.0)
    expected = math.degrees(2 * math.atan(math.tan(math.radians(73.0) / 2) / 2))
    assert plan.hfov_deg == pytest.approx(expected, abs=1e-3)
    assert 73.0 / 2 < plan.hfov_deg < 73.0  # narrower, but not linearly: it is an angle


def test_digital_zoom_is_capped() -> None:
    assert lens_plan(PRO_MAX_LENSES, 25.0).digital_zoom == 5.0
    with pytest.raises(LensRefused, match=r"reaches at most 25x .*tele 5x with 5x digital"):
        lens_plan(PRO_MAX_LENSES, 30.0)


@pytest.mark.parametrize("zoom", [0.0, -1.0, math.nan, math.inf])
def test_nonsense_zooms_are_refused(zoom: float) -> None:
    with pytest.raises(LensRefused):
        lens_plan(IPHONE_LENSES, zoom)


def test_a_device_without_lenses_must_register_again() -> None:
    with pytest.raises(LensRefused, match="register again"):
        lens_plan([], 1.0)


def test_the_buttons_are_the_lenses_the_device_really_has() -> None:
    assert zoom_buttons(IPHONE_LENSES) == [0.5, 1.0, 2.0, 3.0]
    assert zoom_buttons(IPAD_LENSES) == [1.0]
    assert zoom_buttons(PRO_MAX_LENSES) == [0.5, 1.0, 2.0, 5.0]
