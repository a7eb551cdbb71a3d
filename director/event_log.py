"""The session page's live event log: the session's ledger stream, newest first, in words."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from devices.models import Device
from ledger.models import ProductionEvent

LOG_LIMIT = 30
VETO_REASONS = {
    "bad_framing": "bad framing",
    "wrong_moment": "wrong moment",
    "device_problem": "device problem",
    "other": "other",
}


@dataclass(frozen=True)
class LogLine:
    seq: int
    type: str
    occurred_at: datetime
    text: str

    @property
    def family(self) -> str:
        """`ghost`, `command`, `session`, ...: the log colours lines by it."""
        return self.type.split(".", 1)[0]


PUBLISH_STOPS = {
    "unpublished": "it ended the publish",
    "replaced": "replaced by a new publish",
    "ice_failed": "its connection failed",
    "no_media": "no video arrived",
    "shutdown": "the server stopped",
    "refused": "refused",
    "offline": "it went offline",
    "relay_restarted": "the relay restarted without it",
}


def _name(names: dict[str, str], device_id: object) -> str:
    return names.get(str(device_id), "a camera") if device_id else "nobody"


def describe(event_type: str, payload: dict[str, Any], device: str, names: dict[str, str]) -> str:
    """One line an operator reads at a glance."""
    by = payload.get("by", "")
    match event_type:
        case "session.started":
            return f"Session live with {len(payload.get('devices', []))} camera(s)"
        case "session.stopped":
            summary = payload.get("summary", {})
            return f"Session stopped after {summary.get('duration_s', 0):.0f} s"
        case "session.ghost_mode_changed":
            return f"Ghost {payload['from']} → {payload['to']} ({by})"
        case "hero.switched":
            return f"{_name(names, payload['to'])} on air ({by})"
        case "hero.on_air":
            return f"{device}'s picture on air {payload['after_ms']:.0f} ms after the switch"
        case "device.publish_started":
            return f"{device} publishing video ({payload['codec']})"
        case "device.publish_stopped":
            reason = PUBLISH_STOPS.get(payload["reason"], payload["reason"])
            return f"{device} stopped publishing: {reason}"
        case "ghost.proposed":
            return f"Ghost proposes: {payload['rationale']}"
        case "ghost.accepted":
            return f"Accepted by {by} after {payload['decision_s']:.1f} s"
        case "ghost.vetoed":
            reason = VETO_REASONS.get(payload["reason"], payload["reason"])
            return f"Vetoed by {by}: {reason}"
        case "ghost.expired":
            return "Proposal expired undecided"
        case "ghost.superseded":
            return "Proposal superseded by a more urgent one"
        case "ghost.executed":
            return f"Done: {payload['result']}"
        case "ghost.failed":
            return f"Failed: {payload['result']}"
        case "command.sent":
            return f"{payload['command']} queued for {device}"
        case "command.delivered":
            return f"{payload['command']} delivered to {device} ({payload['via']})"
        case "command.acked":
            return f"{device} did {payload['command']}"
        case "command.failed":
            return f"{device} could not {payload['command']}: {payload['detail']}"
        case "command.expired":
            return f"{payload.get('command', 'command')} for {device} expired"
        case "still.captured":
            size_mb = payload["size_bytes"] / 1_000_000
            return f"Still from {device} ({size_mb:.1f} MB)"
        case "music.uploaded":
            return f"Music “{payload['original_name']}” uploaded ({by})"
        case "music.analysed":
            return f"Music beat found: {payload['bpm']:.1f} BPM, {payload['beats']} beats"
        case "music.analysis_failed":
            return f"Music beat analysis failed: {payload['error']}"
        case "music.cue":
            return f"Music {payload['action']} at {payload['position_s']:.1f} s ({by})"
        case "device.placed":
            if payload["azimuth_deg"] is None:
                return f"{device} taken off the map"
            return f"{device} placed at {payload['azimuth_deg']:.0f}°"
    return event_type


def event_log(*, session_id: UUID, limit: int = LOG_LIMIT) -> list[LogLine]:
    events = list(
        ProductionEvent.objects.filter(stream=str(session_id))
        .order_by("-seq")
        .only("seq", "type", "occurred_at", "device_id", "payload")[:limit]
    )
    ids = {e.device_id for e in events if e.device_id}
    for event in events:
        for key in ("to", "from"):
            if event.type == "hero.switched" and event.payload.get(key):
                ids.add(event.payload[key])
    names = {
        str(pk): name for pk, name in Device.objects.filter(pk__in=ids).values_list("pk", "name")
    }
    return [
        LogLine(
            seq=e.seq,
            type=e.type,
            occurred_at=e.occurred_at,
            text=describe(e.type, e.payload, _name(names, e.device_id), names),
        )
        for e in events
    ]
