"""The relay's reads and writes, synchronous (the relay calls them through
`database_sync_to_async`): each one calls one selector or one service, with string ids
turned into UUIDs."""

from __future__ import annotations

from uuid import UUID

from devices import selectors as device_selectors
from devices import services as device_services
from director import selectors, services


def _uuid(value: str | None) -> UUID | None:
    return UUID(value) if value else None


def publish_started(*, device_id: str, publish_id: str, codec: str, session_id: str | None) -> None:
    device_services.device_publish_start(
        device_id=UUID(device_id),
        publish_id=publish_id,
        codec=codec,
        session_id=_uuid(session_id),
    )


def publish_measured(
    *, device_id: str, publish_id: str, width: int, height: int, fps: float
) -> None:
    device_services.device_publish_measure(
        device_id=UUID(device_id), publish_id=publish_id, width=width, height=height, fps=fps
    )


def publish_stopped(
    *, device_id: str, publish_id: str, reason: str, frames: int, session_id: str | None
) -> None:
    device_services.device_publish_stop(
        device_id=UUID(device_id),
        publish_id=publish_id,
        reason=reason,
        frames=frames,
        session_id=_uuid(session_id),
    )


def session_on_air(*, session_id: str) -> tuple[str, str | None]:
    return selectors.session_on_air(session_id)


def live_session_of(*, device_id: str) -> str | None:
    session = selectors.live_session_for_device(UUID(device_id))
    return str(session.pk) if session is not None else None


def on_air(
    *,
    session_id: str,
    to: str,
    cause: str,
    first_frame_at: float,
    after_ms: float,
    relay_ms: float,
) -> None:
    services.hero_on_air_record(
        session_id=UUID(session_id),
        device_id=UUID(to),
        cause=cause,
        first_frame_at=first_frame_at,
        after_ms=after_ms,
        relay_ms=relay_ms,
    )


def publishes_open() -> list[tuple[str, str]]:
    return [
        (str(device_id), publish_id) for device_id, publish_id in device_selectors.publishes_open()
    ]


def relay_started(*, lost: list[tuple[str, str]]) -> list[str]:
    pairs = [(UUID(device_id), publish_id) for device_id, publish_id in lost]
    return [str(device_id) for device_id in services.hero_relay_started(lost=pairs)]
