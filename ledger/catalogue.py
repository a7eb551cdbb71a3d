"""Every ledger event type, what it means, and the payload keys it must carry.

This module is the one list. `ledger.record` refuses a type that is not here or a payload that
lacks a required key, so the Convex side and the training export can rely on the shapes.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EventType:
    name: str
    description: str
    required: frozenset[str]


def _type(name: str, description: str, *required: str) -> EventType:
    return EventType(name=name, description=description, required=frozenset(required))


CATALOGUE: dict[str, EventType] = {
    t.name: t
    for t in (
        _type(
            "device.registered",
            "A device paired and registered, or re-registered with the same install id. "
            "Payload: name, kind, model, install_id, re_registered (bool).",
            "name",
            "kind",
            "model",
            "install_id",
            "re_registered",
        ),
        _type(
            "device.online",
            "A device that was offline beat again. Payload: offline_for_s (float or null).",
            "offline_for_s",
        ),
        _type(
            "device.offline",
            "A device missed its heartbeats and was marked offline. Payload: reason, "
            "last_seen_at (ISO 8601).",
            "reason",
            "last_seen_at",
        ),
        _type(
            "device.placed",
            "A camera's placement around the subject changed. Payload: azimuth_deg, "
            "distance_m, height_m (each a number or null), source (operator|device).",
            "azimuth_deg",
            "distance_m",
            "height_m",
            "source",
        ),
        _type(
            "command.sent",
            "A command was queued for a device. Payload: command_id, command (type), args, "
            "fire_at and expires_at (unix s, server clock; fire_at may be null), batch (id of "
            "a capture-all, or null), issued_by.",
            "command_id",
            "command",
            "args",
            "fire_at",
            "expires_at",
            "batch",
            "issued_by",
        ),
        _type(
            "command.delivered",
            "A device received a command. Payload: command_id, command, via (socket|poll), "
            "latency_s (issue to delivery).",
            "command_id",
            "command",
            "via",
            "latency_s",
        ),
        _type(
            "command.acked",
            "A device carried out a command. Payload: command_id, command, detail, done_at "
            "(device clock, unix s, or null).",
            "command_id",
            "command",
            "detail",
            "done_at",
        ),
        _type(
            "command.failed",
            "A device could not, or would not, carry out a command. Payload: command_id, "
            "command, status (failed|rejected), detail, done_at.",
            "command_id",
            "command",
            "status",
            "detail",
            "done_at",
        ),
        _type(
            "command.expired",
            "A command's time ran out before the device acknowledged it, or its session stopped; "
            "it is never delivered after this. Payload: command_id, command, was "
            "(queued|delivered), and reason (session_stopped) when the session ended it.",
            "command_id",
            "command",
            "was",
        ),
        _type(
            "still.captured",
            "A still arrived from a camera. Payload: still_id, sha256, size_bytes, lens, zoom, "
            "flip ({horizontal, vertical}), captured_at (unix s, server clock), command_id, "
            "batch.",
            "still_id",
            "sha256",
            "size_bytes",
            "lens",
            "zoom",
            "flip",
            "captured_at",
            "command_id",
            "batch",
        ),
        _type(
            "session.created",
            "An operator created a draft session. Payload: name, operator.",
            "name",
            "operator",
        ),
        _type(
            "session.started",
            "A session went live. Payload: session (the productionSessions row: name, status, "
            "operator, startedAt, updatedAt), devices (ids taking part), hero (id or null).",
            "session",
            "devices",
            "hero",
        ),
        _type(
            "session.stopped",
            "A live session ended. Payload: session (the productionSessions row, with endedAt "
            "and summary), summary (duration_s, devices, events, stills, proposals: proposed, "
            "accepted, vetoed, expired, superseded, executed, failed, accept_rate (accepted "
            "over operator decisions, or null), median_decision_s (or null)).",
            "session",
            "summary",
        ),
        _type(
            "session.ghost_mode_changed",
            "The operator switched Ghost off, to supervised or to autopilot. Payload: from, "
            "to (off|supervised|autopilot), by.",
            "from",
            "to",
            "by",
        ),
        _type(
            "device.publish_started",
            "A camera began publishing video to the hero relay (WHIP). Payload: publish_id, "
            "codec (VP8|H264), replaced (the id of the publish it replaced, or null).",
            "publish_id",
            "codec",
            "replaced",
        ),
        _type(
            "device.publish_stopped",
            "A camera's publish ended. Payload: publish_id, reason (unpublished|replaced|"
            "ice_failed|no_media|refused|shutdown|offline), duration_s, frames (received, or "
            "null).",
            "publish_id",
            "reason",
            "duration_s",
        ),
        _type(
            "hero.on_air",
            "The first frame of a new hero left the relay. Payload: to (device id), cause "
            "(the event id of the hero.switched or session.started that chose it), "
            "first_frame_at (unix s, server clock), after_ms (from the switch being recorded "
            "to that frame), relay_ms (from the switch reaching the relay to that frame).",
            "to",
            "cause",
            "first_frame_at",
            "after_ms",
            "relay_ms",
        ),
        _type(
            "hero.switched",
            "The operator (or Ghost, through the same service) put another camera on air in a "
            "live session. Payload: from (device id or null), to (device id), by (who).",
            "from",
            "to",
            "by",
        ),
        _type(
            "ghost.proposed",
            "Ghost proposed something for a live session. Payload: proposal_id, kind, targets "
            "(device ids), payload, rationale, confidence, policy, priority, expires_at.",
            "proposal_id",
            "kind",
            "targets",
            "payload",
            "rationale",
            "confidence",
            "policy",
            "expires_at",
        ),
        _type(
            "ghost.accepted",
            "A proposal was accepted. Payload: proposal_id, by (operator, or autopilot), "
            "decision_s (from proposed to decided).",
            "proposal_id",
            "by",
            "decision_s",
        ),
        _type(
            "ghost.vetoed",
            "An operator vetoed a proposal. Payload: proposal_id, by, reason "
            "(bad_framing|wrong_moment|device_problem|other), note, decision_s. A training label.",
            "proposal_id",
            "by",
            "reason",
            "note",
            "decision_s",
        ),
        _type(
            "ghost.expired",
            "A pending proposal ended with no decision: its countdown ran out (supervised), "
            "Ghost was switched off, or the session stopped. Payload: proposal_id, reason "
            "(countdown|ghost_off|session_stopped; absent in early events).",
            "proposal_id",
        ),
        _type(
            "ghost.superseded",
            "A newer, higher-priority proposal took a pending one's place. Payload: "
            "proposal_id, by_proposal_id.",
            "proposal_id",
            "by_proposal_id",
        ),
        _type(
            "ghost.executed",
            "An accepted proposal was carried out through the operator's own services; a "
            "reposition, when the camera's placement changed or the operator marked it done. "
            "Payload: proposal_id, result.",
            "proposal_id",
            "result",
        ),
        _type(
            "ghost.failed",
            "An accepted proposal could not be carried out (or, for a reposition, the session "
            "ended before the camera moved). Payload: proposal_id, result.",
            "proposal_id",
            "result",
        ),
        _type(
            "music.uploaded",
            "The operator uploaded the session's music track (it replaces any earlier one, "
            "which is kept). Payload: track_id, original_name, sha256, size_bytes, container, "
            "codec, duration_s (decoded), sample_rate, channels, replaced (the id of the track "
            "it replaced, or null), by.",
            "track_id",
            "original_name",
            "sha256",
            "size_bytes",
            "container",
            "codec",
            "duration_s",
            "sample_rate",
            "channels",
            "replaced",
            "by",
        ),
        _type(
            "music.analysed",
            "The beat grid of a music track was found. Payload: track_id, bpm (from a fit of "
            "the beat times), beats (how many; the times are on the track), duration_s, "
            "tempo_estimate_bpm (librosa's tempo bin).",
            "track_id",
            "bpm",
            "beats",
            "duration_s",
        ),
        _type(
            "music.analysis_failed",
            "The beat grid of a music track could not be found. Payload: track_id, error.",
            "track_id",
            "error",
        ),
        _type(
            "music.cue",
            "The operator played, paused or sought the music, or it reached its end. The "
            "event's time is when the server received the cue. Payload: track_id, action "
            "(play|pause|seek|ended), position_s (seconds into the track), server_time (unix s, "
            "the same instant as the event's time), by, client_time (the browser's clock, unix "
            "s, or null).",
            "track_id",
            "action",
            "position_s",
            "server_time",
            "by",
        ),
        _type(
            "pairing.rotated",
            "The pairing code changed. Payload: reason (first|expired|operator). The code "
            "itself is never written to the ledger.",
            "reason",
        ),
    )
}


class UnknownEventType(ValueError):
    pass


class MissingPayloadKeys(ValueError):
    pass


def validate(type_name: str, payload: dict[str, object]) -> EventType:
    try:
        event_type = CATALOGUE[type_name]
    except KeyError:
        raise UnknownEventType(
            f"Unknown ledger event type {type_name!r}: add it to ledger/catalogue.py first."
        ) from None
    missing = event_type.required - payload.keys()
    if missing:
        raise MissingPayloadKeys(
            f"Ledger event {type_name!r} is missing payload keys: {', '.join(sorted(missing))}."
        )
    return event_type
