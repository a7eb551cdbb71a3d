"""Every change of state of the camera fleet, one service per change (see STYLE.md).

The package is split by subject; callers import from here: `from devices import services`.
"""

from __future__ import annotations

from devices.services.commands import (
    CommandConflict,
    CommandNotFound,
    CommandRefused,
    command_ack,
    command_claim,
    command_expire,
    command_issue,
    commands_expire_due,
    commands_issue_capture,
)
from devices.services.fleet import (
    PAIRING_ALPHABET,
    PAIRING_CODE_LENGTH,
    PRESENCE_FIELDS,
    REORDER_WINDOW_S,
    STATE_FIELDS,
    TOKEN_PREFIX,
    BeatIn,
    Heartbeat,
    HeartbeatRejected,
    PairingRefused,
    Registration,
    RoundTrip,
    TooManyPairingAttempts,
    device_heartbeat,
    device_heartbeats_record,
    device_mark_offline,
    device_register,
    hash_token,
    normalize_pairing_code,
    offline_cutoff,
    pairing_code_get_or_rotate,
    pairing_code_rotate,
)
from devices.services.placement import PlacementRefused, device_place

__all__ = [
    "PAIRING_ALPHABET",
    "PAIRING_CODE_LENGTH",
    "PRESENCE_FIELDS",
    "REORDER_WINDOW_S",
    "STATE_FIELDS",
    "TOKEN_PREFIX",
    "BeatIn",
    "CommandConflict",
    "CommandNotFound",
    "CommandRefused",
    "Heartbeat",
    "HeartbeatRejected",
    "PairingRefused",
    "PlacementRefused",
    "Registration",
    "RoundTrip",
    "TooManyPairingAttempts",
    "command_ack",
    "command_claim",
    "command_expire",
    "command_issue",
    "commands_expire_due",
    "commands_issue_capture",
    "device_heartbeat",
    "device_heartbeats_record",
    "device_mark_offline",
    "device_place",
    "device_register",
    "hash_token",
    "normalize_pairing_code",
    "offline_cutoff",
    "pairing_code_get_or_rotate",
    "pairing_code_rotate",
]
