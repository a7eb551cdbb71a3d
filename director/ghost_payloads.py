"""The one schema of a Ghost proposal's action payload, per kind.

Policies, the external API and `proposal_create` all go through `validate_payload`, so a
proposal that reaches the banner can be carried out as it says.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from director.models import GhostProposal

Kind = GhostProposal.Kind


class PayloadInvalid(ValueError):
    """The payload does not fit its kind; the message names the key and what to send."""

    def __init__(self, message: str, *, field: str = "payload") -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Number:
    low: float
    high: float
    unit: str = ""
    required: bool = True


@dataclass(frozen=True)
class Flag:
    required: bool = True


Spec = Number | Flag

SCHEMAS: dict[str, dict[str, Spec]] = {
    # Facing says which way it found the subject facing, for the operator and the record.
    Kind.SWITCH_HERO: {"facing_deg": Number(0, 360, "°", required=False)},
    Kind.CAPTURE_STILL: {},
    Kind.CAPTURE_ALL: {},
    Kind.SET_LENS: {"zoom": Number(0.1, 100)},
    Kind.SET_FLIP: {"horizontal": Flag(), "vertical": Flag()},
    Kind.REPOSITION: {
        "azimuth_deg": Number(0, 360, "°"),
        "distance_m": Number(0.2, 50, " m", required=False),
        "height_m": Number(0, 5, " m", required=False),
    },
}


def _describe(schema: dict[str, Spec]) -> str:
    if not schema:
        return "takes an empty payload {}"
    parts = []
    for key, spec in schema.items():
        shape = f"{spec.low:g} to {spec.high:g}" if isinstance(spec, Number) else "true or false"
        parts.append(f"{key} ({shape}{'' if spec.required else ', optional'})")
    return "takes " + ", ".join(parts)


def _number(kind: str, key: str, spec: Number, value: object) -> float:
    where = f"payload.{key}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PayloadInvalid(
            f"{where}: a {kind} proposal needs a number from {spec.low:g} to {spec.high:g}, "
            f"not {value!r}.",
            field=where,
        )
    if not math.isfinite(value) or not spec.low <= value <= spec.high:
        raise PayloadInvalid(
            f"{where}: {value!r} is out of range; send {spec.low:g} to {spec.high:g}{spec.unit}.",
            field=where,
        )
    return float(value)


def _flag(kind: str, key: str, value: object) -> bool:
    if not isinstance(value, bool):
        where = f"payload.{key}"
        raise PayloadInvalid(
            f"{where}: a {kind} proposal needs true or false, not {value!r}.", field=where
        )
    return value


def validate_payload(kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The cleaned payload for `kind`: numbers as floats, an azimuth within [0, 360), optional
    keys sent as null left out. Raises `PayloadInvalid` for an unknown kind, an unknown or
    missing key, or a value of the wrong type or out of range."""
    if kind not in SCHEMAS:
        raise PayloadInvalid(
            f"kind: {kind!r} is not something Ghost can propose; use one of {', '.join(SCHEMAS)}.",
            field="kind",
        )
    schema = SCHEMAS[kind]
    if not isinstance(payload, dict):
        raise PayloadInvalid(f"payload: a {kind} payload is a JSON object; it {_describe(schema)}.")
    unknown = sorted(str(key) for key in payload if key not in schema)
    if unknown:
        raise PayloadInvalid(
            f"payload.{unknown[0]}: a {kind} proposal {_describe(schema)}; remove "
            f"{', '.join(unknown)}.",
            field=f"payload.{unknown[0]}",
        )
    cleaned: dict[str, Any] = {}
    for key, spec in schema.items():
        value = payload.get(key)
        if value is None:
            if spec.required:
                raise PayloadInvalid(
                    f"payload.{key}: a {kind} proposal {_describe(schema)}; {key} is missing.",
                    field=f"payload.{key}",
                )
            continue
        cleaned[key] = (
            _number(kind, key, spec, value) if isinstance(spec, Number) else _flag(kind, key, value)
        )
    if kind == Kind.REPOSITION:
        # 360° and 0° are the same place; keep one spelling for the crew and for coverage.
        cleaned["azimuth_deg"] = cleaned["azimuth_deg"] % 360.0
    return cleaned
