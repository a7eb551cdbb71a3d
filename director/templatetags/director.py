from __future__ import annotations

from uuid import UUID

from django import template
from django.urls import reverse

from devices.models import DeviceCommand
from director import dom
from director.models import Still

register = template.Library()


@register.filter
def card_id(device_id: UUID | str) -> str:
    return dom.device_card_id(device_id)


@register.filter
def live_id(device_id: UUID | str) -> str:
    return dom.device_live_id(device_id)


@register.simple_tag
def dom_id(name: str) -> str:
    return str(getattr(dom, name))


@register.filter
def flip_class(device: object) -> str:
    """The classes that mirror a device's picture, for every view of it (card, map, hero)."""
    classes = []
    if getattr(device, "flip_horizontal", False):
        classes.append("flip-h")
    if getattr(device, "flip_vertical", False):
        classes.append("flip-v")
    return " ".join(classes)


@register.filter
def command_summary(command: DeviceCommand | None) -> str:
    """One line for the card: what was asked, in the operator's words."""
    if command is None:
        return ""
    args = command.args or {}
    if command.type == DeviceCommand.Type.SET_LENS:
        return f"Lens {args.get('zoom', 0):g}x ({str(args.get('lens', '')).replace('_', '-')})"
    if command.type == DeviceCommand.Type.SET_FLIP:
        axes = [name for name in ("horizontal", "vertical") if args.get(name)]
        return "Flip " + (" + ".join(axes) if axes else "off")
    if command.type == DeviceCommand.Type.TALLY:
        return f"Tally {args.get('state', '')}"
    if command.type == DeviceCommand.Type.CAPTURE_STILL:
        return "Capture (all)" if command.batch and command.fire_at else "Capture"
    return command.get_type_display()


@register.filter
def lens_name(lens_id: str) -> str:
    """ "ultra_wide" → "ultra-wide": lens ids as a photographer reads them."""
    return lens_id.replace("_", "-")


@register.filter
def still_thumb_url(still: Still) -> str:
    return reverse("director:still_thumbnail", args=[still.pk])


@register.filter
def zoom_label(zoom: float | None) -> str:
    """0.5 → "0.5x", 2.0 → "2x"."""
    return "" if zoom is None else f"{float(zoom):.3g}x"


@register.filter
def percent(fraction: float | None) -> str:
    """0.8 → "80 %"."""
    if fraction is None:
        return "—"
    return f"{fraction * 100:.0f} %"
