"""Reads of Ghost proposals for the session page: the banner, the crew's open moves, the
history and the session's metrics."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from django.db.models import Prefetch, QuerySet
from django.utils import timezone

from devices.models import Device
from director.models import GhostProposal

State = GhostProposal.State
HISTORY_LIMIT = 20
AUTOPILOT = "autopilot"
# An operator said yes to these (the execution may still have failed).
ACCEPTED_STATES = (State.ACCEPTED, State.EXECUTED, State.FAILED)


def _with_targets(rows: QuerySet[GhostProposal]) -> QuerySet[GhostProposal]:
    return rows.prefetch_related(
        Prefetch("targets", queryset=Device.objects.order_by("name"), to_attr="target_list")
    )


@dataclass(frozen=True)
class Banner:
    """What the banner shows: the proposal on it, how many wait behind it, and the proposal
    it has just superseded (if any)."""

    proposal: GhostProposal | None
    waiting: int
    replaced: GhostProposal | None
    remaining_s: float
    total_s: float
    autopilot: bool

    @property
    def target_ids(self) -> list[str]:
        if self.proposal is None:
            return []
        return [str(d.pk) for d in self.proposal.target_list]  # type: ignore[attr-defined]


def banner_get(*, session_id: UUID, autopilot: bool, now: datetime | None = None) -> Banner:
    now = now or timezone.now()
    pending = list(
        _with_targets(
            GhostProposal.objects.filter(
                session_id=session_id, state=State.PENDING, expires_at__gt=now
            ).order_by("-priority", "created_at")
        )
    )
    current = pending[0] if pending else None
    replaced = None
    if current is not None:
        replaced = (
            GhostProposal.objects.filter(superseded_by=current).order_by("-decided_at").first()
        )
    return Banner(
        proposal=current,
        waiting=max(0, len(pending) - 1),
        replaced=replaced,
        remaining_s=max(0.0, (current.expires_at - now).total_seconds()) if current else 0.0,
        total_s=(current.expires_at - current.created_at).total_seconds() if current else 0.0,
        autopilot=autopilot,
    )


def crew_moves(*, session_id: UUID) -> list[GhostProposal]:
    """Accepted repositions the crew has not carried out yet."""
    return list(
        _with_targets(
            GhostProposal.objects.filter(
                session_id=session_id, state=State.ACCEPTED, kind=GhostProposal.Kind.REPOSITION
            ).order_by("decided_at")
        )
    )


def history(*, session_id: UUID, limit: int = HISTORY_LIMIT) -> list[GhostProposal]:
    """The most recent proposals that left the banner, newest first."""
    return list(
        _with_targets(
            GhostProposal.objects.filter(session_id=session_id)
            .exclude(state=State.PENDING)
            .order_by("-created_at")[:limit]
        )
    )


@dataclass(frozen=True)
class GhostMetrics:
    proposed: int
    pending: int
    accepted: int
    vetoed: int
    expired: int
    superseded: int
    executed: int
    failed: int
    autopilot: int
    accept_rate: float | None  # accepted over the operators' decisions
    median_decision_s: float | None

    def as_summary(self) -> dict[str, float | int | None]:
        return {
            "proposed": self.proposed,
            "accepted": self.accepted,
            "vetoed": self.vetoed,
            "expired": self.expired,
            "superseded": self.superseded,
            "executed": self.executed,
            "failed": self.failed,
            "autopilot": self.autopilot,
            "accept_rate": None if self.accept_rate is None else round(self.accept_rate, 4),
            "median_decision_s": (
                None if self.median_decision_s is None else round(self.median_decision_s, 3)
            ),
        }


def ghost_metrics(*, session_id: UUID) -> GhostMetrics:
    rows = list(
        GhostProposal.objects.filter(session_id=session_id).values_list(
            "state", "decided_by", "created_at", "decided_at"
        )
    )
    by_state = {state: 0 for state in State.values}
    accepted = vetoed = autopilot = 0
    decision_times: list[float] = []
    for state, decided_by, created_at, decided_at in rows:
        by_state[state] += 1
        if not decided_by:
            continue
        if decided_by == AUTOPILOT:
            autopilot += 1
            continue
        if state == State.VETOED:
            vetoed += 1
        elif state in ACCEPTED_STATES:
            accepted += 1
        else:
            continue
        if decided_at is not None:
            decision_times.append((decided_at - created_at).total_seconds())
    decided = accepted + vetoed
    return GhostMetrics(
        proposed=len(rows),
        pending=by_state[State.PENDING],
        accepted=accepted,
        vetoed=vetoed,
        expired=by_state[State.EXPIRED],
        superseded=by_state[State.SUPERSEDED],
        executed=by_state[State.EXECUTED],
        failed=by_state[State.FAILED],
        autopilot=autopilot,
        accept_rate=accepted / decided if decided else None,
        median_decision_s=statistics.median(decision_times) if decision_times else None,
    )
