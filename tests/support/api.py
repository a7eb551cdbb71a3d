"""Bodies the capture app sends, for API and service tests."""

from __future__ import annotations

import time
from typing import Any

IPHONE_LENSES = [
    {"id": "ultra_wide", "zoom": 0.5, "hfov_deg": 106.0},
    {"id": "wide", "zoom": 1.0, "hfov_deg": 73.0},
    {"id": "tele", "zoom": 3.0, "hfov_deg": 27.0},
]


def register_body(code: str, install_id: str = "install-1", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "pairing_code": code,
        "install_id": install_id,
        "name": "Cam 1",
        "kind": "iphone",
        "model": "iPhone 15 Pro",
        "os_version": "18.1",
        "app_version": "1.0.0",
        "lenses": IPHONE_LENSES,
    }
    body.update(overrides)
    return body


def heartbeat_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "sent_at": time.time(),
        "battery": 0.81,
        "charging": False,
        "thermal": "nominal",
        "lens": "wide",
        "zoom": 1.0,
        "orientation": "landscape_left",
        "flip": {"horizontal": False, "vertical": False},
        "storage_free_mb": 51_200,
        "fps": 30.0,
    }
    body.update(overrides)
    return body


def register_device(
    install_id: str,
    *,
    name: str | None = None,
    kind: str = "iphone",
    model: str = "iPhone 15 Pro",
    lenses: list[dict[str, Any]] | None = None,
    online: bool = True,
) -> Any:
    """Register a device through the service, as the register endpoint does; returns the
    `Registration` (device and plain token)."""
    from devices import services

    registration = services.device_register(
        pairing_code=services.pairing_code_get_or_rotate().code,
        address="127.0.0.1",
        install_id=install_id,
        name=name or f"Cam {install_id}",
        kind=kind,
        model=model,
        os_version="18.1",
        app_version="1.0",
        lenses=IPHONE_LENSES if lenses is None else lenses,
    )
    if not online:
        services.device_mark_offline(device_id=registration.device.pk, reason="test")
    return registration


def record_beat(device_id: Any, **overrides: Any) -> Any:
    """Store one heartbeat through the service, its body parsed as the API parses it."""
    from django.utils import timezone

    from devices import services
    from devices.api import HeartbeatIn, heartbeat_from_schema

    beat = heartbeat_from_schema(HeartbeatIn.model_validate(heartbeat_body(**overrides)))
    return services.device_heartbeat(device_id=device_id, received_at=timezone.now(), beat=beat)
