"""A heartbeat round trip as the server stores it, for tests that need a device's clock."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from devices.models import ClockSample, Device


def round_trip(
    device: Device,
    sent: float,
    forward: float,
    back: float,
    device_time: Callable[[float], float],
) -> ClockSample:
    """The heartbeat leaving at server time `sent`, `forward` s on the way there and `back`
    on the way back, answered 0.5 ms after it arrived; `device_time` maps server time to the
    device's clock."""
    received = sent + forward
    answered = received + 0.0005
    returned = answered + back
    sent_d, returned_d = device_time(sent), device_time(returned)
    return ClockSample(
        device=device,
        at=datetime.fromtimestamp(answered, tz=UTC),
        sent_at=sent_d,
        received_at=received,
        server_time=answered,
        returned_at=returned_d,
        offset_s=((sent_d - received) + (returned_d - answered)) / 2,
        delay_s=(returned_d - sent_d) - (answered - received),
    )
