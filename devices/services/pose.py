"""Pose frames from the capture app: checked, stored one batch per row, rate kept for the card.

At 30 fps a device sends 108,000 frames an hour, so nothing here is per frame in the database:
one `PoseBatch` row per accepted batch, no ledger event, and the card's pose rate is written at
most once a second per device (and then only when it moved or went stale).
"""

from __future__ import annotations

import json
import math
import operator
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from itertools import chain
from typing import Any, NoReturn
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from devices import broadcast
from devices.models import Device, PoseBatch

POSE_KEYPOINTS: dict[str, int] = {
    PoseBatch.Format.COCO17: 17,
    PoseBatch.Format.VISION19: 19,
    PoseBatch.Format.MEDIAPIPE33: 33,
}
DEFAULT_MAX_FRAMES = 300  # 10 s at 30 fps
# Device clock bounds, as for heartbeats: 2001..2100, a phone's clock may be off but not by decades.
T_MIN, T_MAX = 1e9, 4.1e9
# The card's pose rate: written at most this often, and when it moves by POSE_FPS_STEP or is
# older than POSE_REFRESH_S.
POSE_RATE_MIN_INTERVAL_S = 1.0
POSE_FPS_STEP = 1.0
POSE_REFRESH_S = 5.0

_NUMBER_TYPES = frozenset({int, float})
_LIST_TYPE = frozenset({list})
_TRIPLE = frozenset({3})
# "%.4f" writes 0.5 as 0.5000: drop the zeros (and a bare point) before each `,` or `]`.
_TRAILING_ZEROS = re.compile(r"\.?0+(?=[,\]])")


class PoseRejected(ValueError):
    """The batch is malformed; the message names the frame (`frames[12].keypoints: ...`)."""


class PoseTooManyFrames(PoseRejected):
    """More frames in one batch than MOTIONMIX_POSE_MAX_FRAMES."""


@dataclass(frozen=True, slots=True)
class PoseFrames:
    """A checked batch, sorted by t: `times` on the device clock, and every frame's keypoints
    flattened into `values` (x, y, c, x, y, c, ...; `width` numbers a frame)."""

    times: list[float]
    values: list[float]
    width: int

    def __len__(self) -> int:
        return len(self.times)


def pose_max_frames() -> int:
    return int(getattr(settings, "MOTIONMIX_POSE_MAX_FRAMES", DEFAULT_MAX_FRAMES))


def _show(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    text = json.dumps(value) if isinstance(value, str | bool) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _is_number(value: object) -> bool:
    return type(value) in _NUMBER_TYPES  # bool is not a number here


def _is_finite(value: object) -> bool:
    try:
        return math.isfinite(value)  # type: ignore[arg-type]
    except OverflowError:  # an int too large for a float
        return False


def _all_finite(values: list[Any]) -> bool:
    try:
        return all(map(math.isfinite, values))
    except OverflowError:
        return False


def _keypoint_error(where: str, keypoint: object) -> str | None:
    if type(keypoint) is not list or len(keypoint) != 3:
        return f"{where}: send [x, y, confidence], got {_show(keypoint)}."
    for name, value in zip(("x", "y", "confidence"), keypoint, strict=True):
        if not _is_number(value):
            return f"{where}: {name} must be a number, got {_show(value)}."
        if not _is_finite(value):
            return f"{where}: {name} must be finite, got {_show(value)}."
    confidence = keypoint[2]
    if not 0 <= confidence <= 1:
        return f"{where}: confidence must be between 0 and 1, got {_show(confidence)}."
    return None


def _frame_error(index: int, frame: object, format: str, count: int) -> str | None:
    """What is wrong with one frame, walked field by field; None if nothing is."""
    where = f"frames[{index}]"
    if not isinstance(frame, Mapping):
        return f"{where}: send an object {{t, keypoints}}, got {_show(frame)}."
    if "t" not in frame:
        return f"{where}.t: missing; send the frame's time on the device clock."
    t = frame["t"]
    if not _is_number(t) or not _is_finite(t) or not T_MIN <= t <= T_MAX:
        return f"{where}.t: must be a finite number of unix seconds (device clock), got {_show(t)}."
    keypoints = frame.get("keypoints")
    if type(keypoints) is not list:
        return f"{where}.keypoints: send a list of [x, y, confidence], got {_show(keypoints)}."
    if len(keypoints) != count:
        return f"{where}.keypoints: {format} needs {count} keypoints, got {len(keypoints)}."
    for j, keypoint in enumerate(keypoints):
        error = _keypoint_error(f"{where}.keypoints[{j}]", keypoint)
        if error:
            return error
    return None


def _refuse(frames: list[Any], format: str, count: int) -> NoReturn:
    for index, frame in enumerate(frames):
        error = _frame_error(index, frame, format, count)
        if error:
            raise PoseRejected(error)
    raise AssertionError("unreachable: the bulk check failed but no frame did")


def _bulk_check(frames: list[Any], count: int) -> PoseFrames | None:
    """The whole batch at once, in C loops over flat lists: a few objects per batch rather
    than per number. None if anything is off; `_refuse` then finds and names it."""
    times: list[Any] = []
    for frame in frames:
        if not isinstance(frame, Mapping):
            return None
        t, keypoints = frame.get("t"), frame.get("keypoints")
        if type(keypoints) is not list or len(keypoints) != count or type(t) not in _NUMBER_TYPES:
            return None
        times.append(t)
    if not _all_finite(times) or min(times) < T_MIN or max(times) > T_MAX:
        return None
    keypoints = list(chain.from_iterable(frame["keypoints"] for frame in frames))
    if set(map(type, keypoints)) != _LIST_TYPE or set(map(len, keypoints)) != _TRIPLE:
        return None
    values = list(chain.from_iterable(keypoints))
    if not set(map(type, values)) <= _NUMBER_TYPES or not _all_finite(values):
        return None
    confidences = values[2::3]
    if min(confidences) < 0 or max(confidences) > 1:
        return None
    width = count * 3
    if any(map(operator.gt, times, times[1:])):
        # Out of order within a batch is stored sorted, not refused (stable for equal t).
        order = sorted(range(len(times)), key=times.__getitem__)
        times = [times[i] for i in order]
        values = list(chain.from_iterable(values[i * width : (i + 1) * width] for i in order))
    return PoseFrames(times=times, values=values, width=width)


def pose_frames_check(*, format: str, frames: object) -> PoseFrames:
    """Check a batch as the device sent it (parsed JSON); the frames come back sorted by t.

    Raises PoseRejected (naming the first bad frame by its index in the batch as sent) or
    PoseTooManyFrames.
    """
    count = POSE_KEYPOINTS.get(format)
    if count is None:
        known = ", ".join(POSE_KEYPOINTS)
        raise PoseRejected(f"format: unknown pose format {_show(format)}; use one of {known}.")
    if not isinstance(frames, list):
        raise PoseRejected(f"frames: send a list of frames, got {_show(frames)}.")
    if not frames:
        raise PoseRejected("frames: send at least 1 frame.")
    limit = pose_max_frames()
    if len(frames) > limit:
        raise PoseTooManyFrames(
            f"frames: {len(frames)} frames in one batch; the limit is {limit}. "
            "Send smaller batches."
        )
    checked = _bulk_check(frames, count)
    if checked is None:
        _refuse(frames, format, count)
    return checked


@cache
def _frame_template(values: int) -> str:
    return "[%.6f,[" + ",".join(["%.4f"] * values) + "]]"


def _frames_json(frames: PoseFrames) -> str:
    """`[[t, [x, y, c, ...]], ...]`: t to 6 decimals, x, y and c to 4. One string format for
    the batch, not one object per number: a batch is up to 30,000 numbers."""
    width, values = frames.width, frames.values
    args: list[float] = []
    for i, t in enumerate(frames.times):
        args.append(t)
        args += values[i * width : (i + 1) * width]
    template = ",".join([_frame_template(width)] * len(frames))
    return _TRAILING_ZEROS.sub("", f"[{template % tuple(args)}]")


def _batch_fps(frames: PoseFrames) -> float | None:
    span = frames.times[-1] - frames.times[0]
    if len(frames) < 2 or span <= 0:
        return None  # one frame (or one instant) says nothing about the rate
    return round((len(frames) - 1) / span, 1)


def _pose_rate_update(*, device_id: UUID, fps: float) -> bool:
    """Write the card's pose rate if due; one conditional UPDATE, so concurrent batches of the
    same device cannot both write within a second. Touches no other column of the device."""
    now = timezone.now()
    recent = now - timedelta(seconds=POSE_RATE_MIN_INTERVAL_S)
    stale = now - timedelta(seconds=POSE_REFRESH_S)
    moved = Q(pose_fps__lte=fps - POSE_FPS_STEP) | Q(pose_fps__gte=fps + POSE_FPS_STEP)
    due = (
        Q(pose_at__isnull=True)
        | Q(pose_fps__isnull=True)
        | Q(pose_at__lte=stale)
        | (Q(pose_at__lte=recent) & moved)
    )
    written = Device.objects.filter(due, pk=device_id).update(pose_fps=fps, pose_at=now)
    return written > 0


def _live_session_id(device_id: UUID) -> UUID | None:
    # Through the reverse relation director's PhotoshootSession.devices declares: devices never
    # imports director.
    device = Device.objects.only("pk").get(pk=device_id)
    session_id: UUID | None = (
        device.photoshoot_sessions.filter(status="live").values_list("pk", flat=True).first()  # type: ignore[attr-defined]
    )
    return session_id


@transaction.atomic
def pose_batch_ingest(
    *,
    device_id: UUID,
    format: str,  # the contract's field name
    frames: object,
) -> int:
    """Check and store one batch of pose frames as one row; returns the number of frames.

    `frames` is the batch as parsed from JSON (`[{t, keypoints: [[x, y, c], ...]}, ...]`).
    Raises PoseRejected or PoseTooManyFrames for a malformed batch and stores nothing. No
    ledger event; the card is pushed (on commit) only when its pose rate was written.
    """
    checked = pose_frames_check(format=format, frames=frames)
    PoseBatch.objects.create(
        device_id=device_id,
        session_id=_live_session_id(device_id),
        format=format,
        first_t=checked.times[0],
        last_t=checked.times[-1],
        frame_count=len(checked),
        received_at=timezone.now(),
        frames=_frames_json(checked),
    )
    fps = _batch_fps(checked)
    if fps is not None and _pose_rate_update(device_id=device_id, fps=fps):
        transaction.on_commit(lambda: broadcast.device_changed(device_id=device_id), robust=True)
    return len(checked)
