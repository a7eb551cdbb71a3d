"""Turning a requested zoom into a lens plan: which physical lens, and how much digital zoom.

The rule, from the contract: the physical lens with the largest native zoom not above the
request, and digital zoom for the rest, capped. A request wider than the widest lens (0.5x on a
device without an ultra-wide) is refused with a reason the operator can read; it is never
quietly turned into 1x.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# Beyond this the picture is mush; the operator is told to pick a longer lens or move closer.
MAX_DIGITAL_ZOOM = 5.0
# Zooms are reported as floats (0.5, 1.0, 2.0, 3.0, 5.0); compare with a little slack.
EPSILON = 1e-6


class LensRefused(ValueError):
    """The device cannot give this zoom; the message says why and what it can do."""


@dataclass(frozen=True)
class LensPlan:
    lens: str
    native_zoom: float
    digital_zoom: float
    hfov_deg: float  # the field of view after digital zoom

    @property
    def zoom(self) -> float:
        return self.native_zoom * self.digital_zoom


def _label(zoom: float) -> str:
    return f"{zoom:g}x"


def lens_plan(
    lenses: Sequence[Mapping[str, Any]],
    zoom: float,
    *,
    device_name: str = "This camera",
    max_digital_zoom: float = MAX_DIGITAL_ZOOM,
) -> LensPlan:
    if not math.isfinite(zoom) or zoom <= 0:
        raise LensRefused(f"{_label(zoom)} is not a zoom: ask for a positive number such as 1x.")
    if not lenses:
        raise LensRefused(f"{device_name} reported no lenses; it must register again.")
    ordered = sorted(lenses, key=lambda lens: float(lens["zoom"]))
    usable = [lens for lens in ordered if float(lens["zoom"]) <= zoom + EPSILON]
    if not usable:
        widest = float(ordered[0]["zoom"])
        missing = "ultra-wide lens" if zoom < 1 else f"lens as wide as {_label(zoom)}"
        raise LensRefused(
            f"{device_name} has no {missing}: its widest is {_label(widest)}, so "
            f"{_label(zoom)} is not possible. Pick {_label(widest)}, or a camera that has one."
        )
    lens = usable[-1]
    native = float(lens["zoom"])
    digital = max(1.0, zoom / native)
    if abs(digital - 1.0) < EPSILON:
        digital = 1.0
    if digital > max_digital_zoom + EPSILON:
        longest = native * max_digital_zoom
        raise LensRefused(
            f"{device_name} reaches at most {_label(round(longest, 2))} "
            f"({lens['id']} {_label(native)} with {_label(max_digital_zoom)} digital); "
            f"{_label(zoom)} would be too soft. Move the camera closer instead."
        )
    half = math.radians(float(lens["hfov_deg"])) / 2
    hfov = math.degrees(2 * math.atan(math.tan(half) / digital))
    return LensPlan(
        lens=str(lens["id"]),
        native_zoom=native,
        digital_zoom=round(digital, 4),
        hfov_deg=round(hfov, 3),
    )


def zoom_buttons(lenses: Sequence[Mapping[str, Any]]) -> list[float]:
    """The zooms to offer as buttons: each physical lens's native zoom, and 2x when the gap
    to the next lens allows it digitally (as the camera app does)."""
    natives = sorted({float(lens["zoom"]) for lens in lenses})
    buttons = set(natives)
    if 1.0 in buttons and 2.0 not in buttons and natives[-1] > 2.0:
        buttons.add(2.0)
    return sorted(buttons)
