"""Run Ghost's policies for live sessions and queue what they propose.

Every `MOTIONMIX_GHOST_POLICY_INTERVAL_S` (Celery beat in the scaled mode, the server's ticker
in the embedded default) each live session with Ghost on gets one run: a snapshot, every
policy, the cooldowns, then `director.ghost.proposal_create` for each idea left.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from uuid import UUID

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from director import ghost
from director.ghost_policies.policies import SWITCH_HERO, Idea, Policy, default_policies
from director.ghost_policies.snapshot import ProposalRecord, session_snapshot
from director.locking import session_lock
from director.models import GhostProposal, PhotoshootSession

logger = logging.getLogger(__name__)

State = GhostProposal.State


def _cooldowns() -> tuple[float, float]:
    return (
        float(getattr(settings, "MOTIONMIX_GHOST_COOLDOWN_S", 30)),
        float(getattr(settings, "MOTIONMIX_GHOST_VETO_COOLDOWN_S", 120)),
    )


def held_back(
    proposals: Sequence[ProposalRecord],
    policy: Policy,
    idea: Idea,
    *,
    now: datetime,
    cooldown_s: float,
    veto_cooldown_s: float,
) -> str | None:
    """Why the idea must wait (None: it may be proposed).

    - The same idea (kind and targets) is not proposed while it is pending from a policy of
      the same or a higher priority, or accepted and not yet carried out (a reposition waits
      for the crew), whichever policy made it.
    - The hero goes one way at a time: a hero switch waits while another one of the same or a
      higher priority is pending.
    - A higher priority policy goes ahead: its proposal supersedes the lower one on the banner.
    - The same policy does not propose the same idea again within `cooldown_s` of the last
      time, nor within `veto_cooldown_s` of an operator's veto.
    """
    targets = frozenset(idea.target_ids)
    recent = now - timedelta(seconds=cooldown_s)
    vetoed_recently = now - timedelta(seconds=veto_cooldown_s)
    for past in proposals:
        if past.kind != idea.kind:
            continue
        waiting = past.state == State.PENDING and past.priority >= policy.priority
        if waiting and idea.kind == SWITCH_HERO:
            return "another hero switch is waiting"
        if past.target_ids != targets:
            continue
        if waiting:
            return "already pending"
        if past.state == State.ACCEPTED:
            return "accepted, being carried out"
        if past.policy != policy.name:
            continue
        if past.state == State.VETOED and (past.decided_at or past.created_at) > vetoed_recently:
            return "vetoed recently"
        if past.created_at > recent:
            return "proposed recently"
    return None


OPEN_STATES = (State.PENDING, State.ACCEPTED)


def _has_open(proposals: Sequence[ProposalRecord], policy: Policy) -> bool:
    """The policy still waits on a proposal of its own: undecided, or accepted and not yet
    carried out (a reposition the crew has not made)."""
    return any(p.policy == policy.name and p.state in OPEN_STATES for p in proposals)


def _record(proposal: GhostProposal, idea: Idea) -> ProposalRecord:
    return ProposalRecord(
        policy=proposal.policy,
        kind=proposal.kind,
        target_ids=frozenset(idea.target_ids),
        payload=proposal.payload,
        state=proposal.state,
        created_at=proposal.created_at,
        priority=proposal.priority,
    )


def _propose(
    session_id: UUID,
    policy: Policy,
    ideas: Sequence[Idea],
    proposals: list[ProposalRecord],
    now: datetime,
) -> GhostProposal | None:
    """Queue the first of the policy's ideas (best first) that may be proposed now."""
    cooldown_s, veto_cooldown_s = _cooldowns()
    for idea in ideas:
        reason = held_back(
            proposals,
            policy,
            idea,
            now=now,
            cooldown_s=cooldown_s,
            veto_cooldown_s=veto_cooldown_s,
        )
        if reason is not None:
            logger.debug("Ghost %s holds back %s: %s", policy.name, idea.kind, reason)
            continue
        try:
            proposal = ghost.proposal_create(
                session_id=session_id,
                kind=idea.kind,
                target_ids=list(idea.target_ids),
                payload=dict(idea.payload),
                rationale=idea.rationale,
                confidence=idea.confidence,
                policy=policy.name,
                priority=policy.priority,
            )
        except ghost.ProposalRefused as exc:
            logger.info("Ghost %s: %s refused: %s", policy.name, idea.kind, exc)
            continue
        proposals.append(_record(proposal, idea))
        return proposal
    return None


def ghost_policies_run(
    *,
    session_id: UUID,
    now: datetime | None = None,
    policies: Sequence[Policy] | None = None,
) -> list[GhostProposal]:
    """One run of the policies (default: `default_policies()`) for one session, highest
    priority first; returns the proposals it queued, at most one per policy. Sessions that are
    not live, or whose Ghost is off, get nothing.

    Runs of one session are serialized on the session's row, so a slow run overlapping the next
    tick cannot queue the same idea twice. A refused idea is logged and the policy's next one
    tried; a policy that fails is logged and skipped: neither stops the other policies.
    """
    cooldown_s, veto_cooldown_s = _cooldowns()
    chosen = sorted(
        policies if policies is not None else default_policies(), key=lambda p: -p.priority
    )
    created: list[GhostProposal] = []
    with transaction.atomic():
        try:
            # With its cameras: a proposal may send a tally (director/locking.py).
            session = session_lock(session_id)
        except PhotoshootSession.DoesNotExist:
            return []
        status, mode = session.status, session.ghost_mode
        if status != PhotoshootSession.Status.LIVE or mode == PhotoshootSession.GhostMode.OFF:
            return []
        snapshot = session_snapshot(
            session_id=session_id,
            now=now or timezone.now(),
            history_s=max(cooldown_s, veto_cooldown_s),
        )
        # The session's proposals, and those this run adds, for the cooldowns.
        proposals = list(snapshot.proposals)
        for policy in chosen:
            if _has_open(proposals, policy):
                continue
            try:
                ideas = policy.propose(snapshot)
            except Exception:
                logger.exception("Ghost policy %s failed on session %s", policy.name, session_id)
                continue
            proposal = _propose(session_id, policy, ideas, proposals, snapshot.now)
            if proposal is not None:
                created.append(proposal)
    return created


def live_session_ids() -> list[UUID]:
    return list(
        PhotoshootSession.objects.filter(status=PhotoshootSession.Status.LIVE)
        .exclude(ghost_mode=PhotoshootSession.GhostMode.OFF)
        .order_by("started_at")
        .values_list("pk", flat=True)
    )


def ghost_policies_run_live(*, now: datetime | None = None) -> int:
    """Run the policies for every live session with Ghost on; returns how many proposals were
    queued. Each session runs in its own transaction, and a failure in one is logged and does
    not stop the others."""
    created = 0
    for session_id in live_session_ids():
        try:
            created += len(ghost_policies_run(session_id=session_id, now=now))
        except Exception:
            logger.exception("Ghost policies failed for session %s", session_id)
    return created
