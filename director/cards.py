"""What a device card shows beyond the device row: the zoom buttons it really has, the last
command and its state, and the preview (its latest still). Fetched for many cards at once."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db.models import OuterRef, QuerySet, Subquery

from devices.lenses import zoom_buttons
from devices.models import Device, DeviceCommand
from director.models import PhotoshootSession, Still

ZOOM_MATCH = 0.01


@dataclass(frozen=True)
class ZoomButton:
    zoom: float
    label: str
    active: bool
    pending: bool


@dataclass(frozen=True)
class CardExtras:
    zooms: list[ZoomButton]
    last_command: DeviceCommand | None
    preview: Still | None
    # In a live session: whether it may go on air, and whether it is on air.
    in_live_session: bool = False
    on_air: bool = False

    @property
    def custom_zoom(self) -> bool:
        """The active zoom is not one of the buttons (typed by the operator)."""
        return not any(button.active for button in self.zooms)


def _label(zoom: float) -> str:
    return f"{zoom:g}x"


def _latest_per_device(ids: list[Any], rows: QuerySet[Any], order: str) -> dict[Any, Any]:
    """device id → the pk of its first row in `order` (or None), in one query."""
    latest = rows.filter(device=OuterRef("pk")).order_by(order).values("pk")[:1]
    return dict(
        Device.objects.filter(pk__in=ids)
        .annotate(latest=Subquery(latest))
        .values_list("pk", "latest")
    )


def decorate(devices: Iterable[Device]) -> list[Device]:
    """Attach `card` (CardExtras) to each device, with two queries for the lot."""
    devices = list(devices)
    ids = [d.pk for d in devices]
    command_ids = _latest_per_device(ids, DeviceCommand.objects.all(), "-issued_at")
    commands = DeviceCommand.objects.in_bulk([c for c in command_ids.values() if c])
    still_ids = _latest_per_device(ids, Still.objects.all(), "-captured_at")
    stills = Still.objects.in_bulk([s for s in still_ids.values() if s])
    live = PhotoshootSession.objects.filter(status=PhotoshootSession.Status.LIVE)
    in_live = set(
        PhotoshootSession.devices.through.objects.filter(
            photoshootsession__in=live, device_id__in=ids
        ).values_list("device_id", flat=True)
    )
    heroes = set(live.exclude(hero=None).values_list("hero_id", flat=True))
    for device in devices:
        command = commands.get(command_ids.get(device.pk))
        pending_zoom = (
            command.args.get("zoom")
            if command is not None and command.is_open and command.type == "set_lens"
            else None
        )
        device.card = CardExtras(  # type: ignore[attr-defined]
            zooms=[
                ZoomButton(
                    zoom=zoom,
                    label=_label(zoom),
                    active=device.zoom is not None and abs(device.zoom - zoom) < ZOOM_MATCH,
                    pending=pending_zoom is not None and abs(pending_zoom - zoom) < ZOOM_MATCH,
                )
                for zoom in zoom_buttons(device.lenses)
            ],
            last_command=command,
            preview=stills.get(still_ids.get(device.pk)),
            in_live_session=device.pk in in_live,
            on_air=device.pk in heroes,
        )
    return devices
