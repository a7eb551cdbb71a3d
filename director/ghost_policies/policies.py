"""Ghost's policies: plain classes, a `SessionSnapshot` in and ideas out.

A policy never touches the database and never decides whether an idea is shown. It returns
its ideas best first, alternatives after (another camera for the same move); the runner queues
the first one its cooldowns let through, with `director.ghost.proposal_create`.

Thresholds are constructor arguments; left out, they come from the `MOTIONMIX_GHOST_*`
settings at the time the policy is built.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar
from uuid import UUID

from django.conf import settings

from director import coverage
from director.ghost_policies.facing import FacingEstimate, angle_between, estimate_facing
from director.ghost_policies.snapshot import CameraState, SessionSnapshot

# The proposal kinds (GhostProposal.Kind values), spelt out so this module needs no model.
SWITCH_HERO = "switch_hero"
CAPTURE_ALL = "capture_all"
REPOSITION = "reposition"
MAX_RATIONALE = 200
# Thermal states from best to worst; an unreported state counts as "fair".
THERMAL_RANK = {"nominal": 0, "fair": 1, "": 1, "serious": 2, "critical": 3}


def _setting(name: str, default: float) -> float:
    return float(getattr(settings, name, default))


def _sentence(text: str) -> str:
    return text if len(text) <= MAX_RATIONALE else text[: MAX_RATIONALE - 1] + "…"


def _clamp(value: float) -> float:
    return max(0.0, min(1.0, value))


def _deg(value: float) -> str:
    return f"{round(value) % 360}°"


@dataclass(frozen=True)
class Idea:
    """What a policy would propose: the fields of a proposal minus who made it."""

    kind: str
    target_ids: tuple[UUID, ...]
    rationale: str
    confidence: float
    payload: Mapping[str, object] = field(default_factory=dict)


class Policy:
    name: ClassVar[str]
    priority: ClassVar[int]

    def propose(self, snapshot: SessionSnapshot) -> list[Idea]:
        raise NotImplementedError


def is_healthy(camera: CameraState, *, min_battery_percent: float) -> bool:
    return (
        camera.online and not camera.thermal_warning and not camera.battery_low(min_battery_percent)
    )


def health_key(camera: CameraState) -> tuple[int, float, str]:
    """Sorts the healthiest camera first: coolest, then fullest (charging counts as full)."""
    if camera.charging:
        battery = 100.0
    else:
        battery = 50.0 if camera.battery_percent is None else float(camera.battery_percent)
    return (THERMAL_RANK.get(camera.thermal, 1), -battery, camera.name)


def facing_camera(
    estimate: FacingEstimate,
    *,
    candidates: Sequence[CameraState],
    max_offset_deg: float,
) -> tuple[CameraState, float] | None:
    """The placed candidate whose azimuth is closest to where the subject faces, with that
    angle; None if even the closest one is more than `max_offset_deg` off."""
    placed = [c for c in candidates if c.azimuth_deg is not None]
    if not placed:
        return None
    best = min(
        placed,
        key=lambda c: (angle_between(c.azimuth_deg or 0.0, estimate.azimuth_deg), c.name),
    )
    offset = angle_between(best.azimuth_deg or 0.0, estimate.azimuth_deg)
    return (best, offset) if offset <= max_offset_deg else None


class HealthPolicy(Policy):
    """The hero is overheating, nearly flat or gone: move the hero to the healthiest camera."""

    name = "health"
    priority = 50

    def __init__(self, *, min_battery_percent: float | None = None) -> None:
        self.min_battery_percent = (
            _setting("MOTIONMIX_GHOST_LOW_BATTERY_PERCENT", 15)
            if min_battery_percent is None
            else min_battery_percent
        )

    def _problem(self, hero: CameraState) -> tuple[str, float] | None:
        if not hero.online:
            return f"{hero.name} is offline", 0.95
        if hero.thermal_warning:
            return f"{hero.name} is overheating ({hero.thermal})", (
                0.95 if hero.thermal == "critical" else 0.8
            )
        if hero.battery_low(self.min_battery_percent):
            return f"{hero.name} is at {hero.battery_percent} % battery", 0.85
        return None

    def propose(self, snapshot: SessionSnapshot) -> list[Idea]:
        hero = snapshot.hero
        if hero is None:
            return []
        problem = self._problem(hero)
        if problem is None:
            return []
        others = [
            c
            for c in snapshot.devices
            if c.id != hero.id and is_healthy(c, min_battery_percent=self.min_battery_percent)
        ]
        text, confidence = problem
        return [
            Idea(
                kind=SWITCH_HERO,
                target_ids=(other.id,),
                rationale=_sentence(f"{text}; move the hero to {other.name}."),
                confidence=confidence,
            )
            for other in sorted(others, key=health_key)
        ]


class FacingPolicy(Policy):
    """The subject faces another camera than the hero: put that camera on air."""

    name = "facing"
    priority = 40

    def __init__(
        self,
        *,
        max_age_s: float | None = None,
        min_confidence: float = 0.4,
        max_offset_deg: float = 45.0,
        margin_deg: float = 20.0,
        min_battery_percent: float | None = None,
    ) -> None:
        self.max_age_s = (
            _setting("MOTIONMIX_GHOST_POSE_MAX_AGE_S", 3) if max_age_s is None else max_age_s
        )
        self.min_confidence = min_confidence
        self.max_offset_deg = max_offset_deg
        # The hero must be this much further off than the new camera, so a subject facing
        # between two cameras does not flip the hero back and forth.
        self.margin_deg = margin_deg
        self.min_battery_percent = (
            _setting("MOTIONMIX_GHOST_LOW_BATTERY_PERCENT", 15)
            if min_battery_percent is None
            else min_battery_percent
        )

    def estimate(self, snapshot: SessionSnapshot) -> FacingEstimate | None:
        estimate = estimate_facing(
            snapshot.devices,
            snapshot.pose,
            now_ts=snapshot.now.timestamp(),
            max_age_s=self.max_age_s,
        )
        if estimate is None or estimate.confidence < self.min_confidence:
            return None
        return estimate

    def propose(self, snapshot: SessionSnapshot) -> list[Idea]:
        estimate = self.estimate(snapshot)
        if estimate is None:
            return []
        found = facing_camera(
            estimate,
            candidates=[c for c in snapshot.devices if c.online],
            max_offset_deg=self.max_offset_deg,
        )
        if found is None:
            return []
        best, offset = found
        hero = snapshot.hero
        if hero is not None and best.id == hero.id:
            return []
        if not is_healthy(best, min_battery_percent=self.min_battery_percent):
            return []  # the health policy would move the hero straight off it
        if hero is not None and hero.online and hero.azimuth_deg is not None:
            hero_offset = angle_between(hero.azimuth_deg, estimate.azimuth_deg)
            if hero_offset - offset < self.margin_deg:
                return []
        return [
            Idea(
                kind=SWITCH_HERO,
                target_ids=(best.id,),
                rationale=_sentence(
                    f"The subject faces {best.name} (about {_deg(estimate.azimuth_deg)}); "
                    "put it on air."
                ),
                confidence=_clamp(estimate.confidence * (1 - offset / (2 * self.max_offset_deg))),
                payload={"facing_deg": round(estimate.azimuth_deg, 1)},
            )
        ]


class CoverageGapPolicy(Policy):
    """A wide arc around the subject is uncovered: move the camera that closes it best."""

    name = "coverage-gap"
    priority = 30
    STEP_DEG = 5.0  # the crew moves stands by eye; finer targets mean nothing

    def __init__(self, *, gap_deg: float | None = None, min_gain_deg: float = 15.0) -> None:
        self.gap_deg = _setting("MOTIONMIX_GHOST_GAP_DEG", 90) if gap_deg is None else gap_deg
        self.min_gain_deg = min_gain_deg

    def propose(self, snapshot: SessionSnapshot) -> list[Idea]:
        gap = snapshot.largest_gap
        if gap is None or gap.size_deg <= self.gap_deg:
            return []
        covering = [c for c in snapshot.devices if c.counts_for_coverage]
        movable = [c for c in covering if c.id != snapshot.hero_id]
        if not movable:
            return []
        target = round(gap.middle_deg / self.STEP_DEG) * self.STEP_DEG % 360.0
        before = _total(snapshot.gaps)

        def outcome(camera: CameraState) -> tuple[float, float, str]:
            rest = [c.azimuth_deg for c in covering if c.id != camera.id]
            moved = coverage.gaps([a for a in rest if a is not None] + [target])
            # What only this camera covers today: moving it away opens that arc.
            unique = _total(coverage.gaps([a for a in rest if a is not None])) - before
            return (moved[0].size_deg if moved else 0.0, unique, camera.name)

        ideas = []
        for camera in sorted(movable, key=outcome):
            gain = gap.size_deg - outcome(camera)[0]
            if gain < self.min_gain_deg:
                break
            ideas.append(
                Idea(
                    kind=REPOSITION,
                    target_ids=(camera.id,),
                    rationale=_sentence(
                        f"Nobody covers {_deg(gap.start_deg)}\u2013{_deg(gap.end_deg)} "
                        f"({round(gap.size_deg)}°); move {camera.name} to {_deg(target)}."
                    ),
                    confidence=_clamp(0.4 + 0.5 * gain / gap.size_deg),
                    payload={"azimuth_deg": float(target)},
                )
            )
        return ideas


def _total(arcs: Sequence[coverage.Arc]) -> float:
    return sum(arc.size_deg for arc in arcs)


class HeroStalenessPolicy(Policy):
    """The hero has been on air too long: offer another angle."""

    name = "hero-staleness"
    priority = 20

    def __init__(
        self,
        *,
        stale_s: float | None = None,
        min_battery_percent: float | None = None,
        facing: FacingPolicy | None = None,
    ) -> None:
        self.stale_s = _setting("MOTIONMIX_GHOST_HERO_STALE_S", 45) if stale_s is None else stale_s
        self.min_battery_percent = (
            _setting("MOTIONMIX_GHOST_LOW_BATTERY_PERCENT", 15)
            if min_battery_percent is None
            else min_battery_percent
        )
        self.facing = facing or FacingPolicy(min_battery_percent=self.min_battery_percent)

    def propose(self, snapshot: SessionSnapshot) -> list[Idea]:
        hero = snapshot.hero
        if hero is None or snapshot.hero_on_air_since is None:
            return []
        on_air_s = (snapshot.now - snapshot.hero_on_air_since).total_seconds()
        if on_air_s < self.stale_s:
            return []
        candidates = [
            c
            for c in snapshot.devices
            if c.id != hero.id and is_healthy(c, min_battery_percent=self.min_battery_percent)
        ]
        if not candidates:
            return []
        return [
            Idea(
                kind=SWITCH_HERO,
                target_ids=(pick.id,),
                rationale=_sentence(
                    f"{hero.name} has been on air for {on_air_s:.0f} s; switch to {pick.name} "
                    f"for {why}."
                ),
                confidence=confidence,
            )
            for pick, why, confidence in self._ranked(snapshot, hero, candidates)
        ]

    def _ranked(
        self, snapshot: SessionSnapshot, hero: CameraState, candidates: list[CameraState]
    ) -> list[tuple[CameraState, str, float]]:
        """Every candidate, best first: the camera the subject faces (if the pose says so),
        then the placed ones farthest round from the hero, then the rest, healthiest first."""
        ranked: list[tuple[CameraState, str, float]] = []
        estimate = self.facing.estimate(snapshot)
        if estimate is not None:
            found = facing_camera(
                estimate, candidates=candidates, max_offset_deg=self.facing.max_offset_deg
            )
            if found is not None:
                ranked.append((found[0], "the side the subject faces", 0.7))
        hero_az = hero.azimuth_deg
        if hero_az is not None:
            placed = [c for c in candidates if c.azimuth_deg is not None]
            for camera in sorted(
                placed, key=lambda c: (-angle_between(c.azimuth_deg or 0.0, hero_az), c.name)
            ):
                apart = angle_between(camera.azimuth_deg or 0.0, hero_az)
                ranked.append(
                    (camera, f"an angle {round(apart)}° round", _clamp(0.45 + 0.25 * apart / 180))
                )
        for camera in sorted(candidates, key=health_key):
            ranked.append((camera, "a fresh view", 0.4))
        seen: set[UUID] = set()
        unique = []
        for entry in ranked:
            if entry[0].id not in seen:
                seen.add(entry[0].id)
                unique.append(entry)
        return unique


class CadencePolicy(Policy):
    """Nothing has been shot for a while during a take: capture all cameras."""

    name = "cadence"
    priority = 10

    def __init__(self, *, cadence_s: float | None = None) -> None:
        self.cadence_s = (
            _setting("MOTIONMIX_GHOST_CADENCE_S", 60) if cadence_s is None else cadence_s
        )

    def propose(self, snapshot: SessionSnapshot) -> list[Idea]:
        marks = [t for t in (snapshot.started_at, snapshot.last_still_at) if t is not None]
        if not marks or not snapshot.online:
            return []
        quiet_s = (snapshot.now - max(marks)).total_seconds()
        if quiet_s < self.cadence_s:
            return []
        what = "No stills yet" if snapshot.last_still_at is None else "No stills"
        return [
            Idea(
                kind=CAPTURE_ALL,
                # Empty: a capture-all fires every online camera of the session when it runs.
                target_ids=(),
                rationale=_sentence(f"{what} for {quiet_s:.0f} s; capture all cameras now."),
                confidence=_clamp(0.5 + 0.2 * min(1.0, quiet_s / self.cadence_s - 1)),
            )
        ]


def default_policies() -> list[Policy]:
    """Every policy with the thresholds in settings, highest priority first."""
    facing = FacingPolicy()
    return [
        HealthPolicy(),
        facing,
        CoverageGapPolicy(),
        HeroStalenessPolicy(facing=facing),
        CadencePolicy(),
    ]
