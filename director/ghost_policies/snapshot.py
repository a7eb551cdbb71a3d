"""What Ghost's policies read: one frozen picture of a live session, built in a few queries.

Policies never touch the database; they get a `SessionSnapshot` and nothing else, so each one
can be tested on a snapshot built by hand.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from uuid import UUID

from django.db.models import Max, Q
from django.utils import timezone

from devices.models import Device
from devices.selectors import pose_latest
from director import coverage
from director.coverage_map import effective_hfov_deg
from director.models import GhostProposal, PhotoshootSession, Still
from ledger.models import ProductionEvent

UNHEALTHY_THERMAL = frozenset({Device.Thermal.SERIOUS.value, Device.Thermal.CRITICAL.value})
# How far back the snapshot looks for proposals when no cooldown asks for more.
DEFAULT_HISTORY_S = 300.0
# Pose for the policies: what arrived in the last few seconds, at most a second at 30 fps per
# camera (the facing policy averages them and drops frames older than its own limit).
POSE_HISTORY_S = 5.0
POSE_FRAMES_PER_CAMERA = 30


@dataclass(frozen=True)
class Lens:
    id: str
    zoom: float | None
    hfov_deg: float | None


@dataclass(frozen=True)
class CameraState:
    """One camera of the session as the policies see it."""

    id: UUID
    name: str
    kind: str
    online: bool
    azimuth_deg: float | None = None  # None: not placed
    distance_m: float | None = None
    height_m: float | None = None
    lens: str = ""
    zoom: float | None = None
    lenses: tuple[Lens, ...] = ()
    hfov_deg: float | None = None  # the active lens after digital zoom
    thermal: str = ""
    battery_percent: int | None = None
    charging: bool | None = None

    @property
    def placed(self) -> bool:
        return self.azimuth_deg is not None

    @property
    def thermal_warning(self) -> bool:
        return self.thermal in UNHEALTHY_THERMAL

    def battery_low(self, min_percent: float) -> bool:
        return (
            self.battery_percent is not None
            and self.battery_percent < min_percent
            and not self.charging
        )

    @property
    def counts_for_coverage(self) -> bool:
        # Webcams are not photoshoot cameras; an offline camera films nothing.
        return self.online and self.placed and self.kind != Device.Kind.WEBCAM


@dataclass(frozen=True)
class ProposalRecord:
    """A recent proposal of the session, for cooldowns and "one pending per policy"."""

    policy: str
    kind: str
    target_ids: frozenset[UUID]
    payload: Mapping[str, object]
    state: str
    created_at: datetime
    decided_at: datetime | None = None
    priority: int = 0


@dataclass(frozen=True)
class PoseFrame:
    """One 2D pose from one camera. `t` is unix seconds on the server's clock (a device's clock
    is mapped through its offset before it gets here); keypoints are [x, y, confidence] in the
    order of `format` (coco17, vision19 or mediapipe33), x growing to the right of the image."""

    device_id: UUID
    t: float
    format: str
    keypoints: tuple[tuple[float, float, float], ...]


@dataclass(frozen=True)
class SessionSnapshot:
    session_id: UUID
    now: datetime
    status: str = PhotoshootSession.Status.LIVE
    ghost_mode: str = PhotoshootSession.GhostMode.SUPERVISED
    started_at: datetime | None = None
    devices: tuple[CameraState, ...] = ()
    hero_id: UUID | None = None
    hero_on_air_since: datetime | None = None
    last_still_at: datetime | None = None
    gaps: tuple[coverage.Arc, ...] = ()
    proposals: tuple[ProposalRecord, ...] = ()
    # The latest pose frames of each camera, oldest first.
    pose: Mapping[UUID, tuple[PoseFrame, ...]] = field(default_factory=dict)

    @property
    def hero(self) -> CameraState | None:
        return self.camera(self.hero_id) if self.hero_id is not None else None

    def camera(self, device_id: UUID) -> CameraState | None:
        return next((d for d in self.devices if d.id == device_id), None)

    @property
    def online(self) -> tuple[CameraState, ...]:
        return tuple(d for d in self.devices if d.online)

    @property
    def largest_gap(self) -> coverage.Arc | None:
        return self.gaps[0] if self.gaps else None


def coverage_gaps(cameras: Iterable[CameraState]) -> tuple[coverage.Arc, ...]:
    """The uncovered arcs left by the placed online cameras, largest first. With no camera
    placed nothing is known, so there are no gaps (rather than one of 360°)."""
    azimuths = [c.azimuth_deg for c in cameras if c.counts_for_coverage]
    if not azimuths:
        return ()
    return tuple(coverage.gaps([a for a in azimuths if a is not None]))


def camera_state(device: Device) -> CameraState:
    return CameraState(
        id=device.pk,
        name=device.name,
        kind=device.kind,
        online=device.is_online,
        azimuth_deg=device.azimuth_deg,
        distance_m=device.distance_m,
        height_m=device.height_m,
        lens=device.lens,
        zoom=device.zoom,
        lenses=tuple(
            Lens(
                id=str(lens.get("id", "")),
                zoom=_float_or_none(lens.get("zoom")),
                hfov_deg=_float_or_none(lens.get("hfov_deg")),
            )
            for lens in device.lenses
            if isinstance(lens, dict)
        ),
        hfov_deg=effective_hfov_deg(device),
        thermal=device.thermal,
        battery_percent=device.battery_percent,
        charging=device.charging,
    )


def _float_or_none(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def session_snapshot(
    *, session_id: UUID, now: datetime | None = None, history_s: float = DEFAULT_HISTORY_S
) -> SessionSnapshot:
    """Read one session for the policies (seven queries, no writes). `history_s` is how far back
    decided proposals are kept for cooldowns; pending and accepted (not yet carried out) ones
    are always kept."""
    now = now or timezone.now()
    session = PhotoshootSession.objects.get(pk=session_id)
    devices = list(session.devices.order_by("name", "registered_at"))
    cameras = tuple(camera_state(d) for d in devices)
    switched_at = (
        ProductionEvent.objects.filter(stream=str(session.pk), type="hero.switched")
        .order_by("-seq")
        .values_list("occurred_at", flat=True)
        .first()
    )
    last_still_at = Still.objects.filter(session_id=session.pk).aggregate(at=Max("captured_at"))[
        "at"
    ]
    return SessionSnapshot(
        session_id=session.pk,
        now=now,
        status=session.status,
        ghost_mode=session.ghost_mode,
        started_at=session.started_at,
        devices=cameras,
        hero_id=session.hero_id,
        hero_on_air_since=(switched_at or session.started_at) if session.hero_id else None,
        last_still_at=last_still_at,
        gaps=coverage_gaps(cameras),
        proposals=_recent_proposals(session.pk, now - timedelta(seconds=history_s)),
        pose=session_pose(devices, now=now),
    )


def session_pose(devices: Iterable[Device], *, now: datetime) -> dict[UUID, tuple[PoseFrame, ...]]:
    """Each camera's newest pose frames (one query), their device times mapped to the server's
    clock with the camera's offset now: the fitted offset and drift, else its best round trip;
    a camera with no estimate yet keeps its own clock (good enough for a few seconds' age)."""
    by_id = {device.pk: device for device in devices}
    latest = pose_latest(
        device_ids=list(by_id), since_s=POSE_HISTORY_S, limit=POSE_FRAMES_PER_CAMERA
    )
    pose: dict[UUID, tuple[PoseFrame, ...]] = {}
    for device_id, samples in latest.items():
        if not samples:
            continue
        offset = by_id[device_id].clock_offset_now(now) or 0.0
        pose[device_id] = tuple(
            PoseFrame(
                device_id=device_id,
                t=sample.t - offset,
                format=sample.format,
                keypoints=tuple(sample.keypoints),
            )
            for sample in samples
        )
    return pose


def _recent_proposals(session_id: UUID, since: datetime) -> tuple[ProposalRecord, ...]:
    rows = list(
        GhostProposal.objects.filter(session_id=session_id)
        .filter(
            Q(state__in=(GhostProposal.State.PENDING, GhostProposal.State.ACCEPTED))
            | Q(created_at__gte=since)
            | Q(decided_at__gte=since)
        )
        .order_by("created_at")
        .values("pk", "policy", "kind", "payload", "state", "created_at", "decided_at", "priority")
    )
    targets: dict[UUID, set[UUID]] = {row["pk"]: set() for row in rows}
    through = GhostProposal.targets.through
    for proposal_id, device_id in through.objects.filter(
        ghostproposal_id__in=list(targets)
    ).values_list("ghostproposal_id", "device_id"):
        targets[proposal_id].add(device_id)
    return tuple(
        ProposalRecord(
            policy=row["policy"],
            kind=row["kind"],
            target_ids=frozenset(targets[row["pk"]]),
            payload=row["payload"] or {},
            state=row["state"],
            created_at=row["created_at"],
            decided_at=row["decided_at"],
            priority=row["priority"],
        )
        for row in rows
    )
