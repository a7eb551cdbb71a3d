"""Ghost's policies: a snapshot of a live session in, proposals out (see runner.py for how and
when they run, policies.py for what each one proposes)."""

from __future__ import annotations

from director.ghost_policies.facing import FacingEstimate, estimate_facing, relative_yaw
from director.ghost_policies.policies import (
    CadencePolicy,
    CoverageGapPolicy,
    FacingPolicy,
    HealthPolicy,
    HeroStalenessPolicy,
    Idea,
    Policy,
    default_policies,
)
from director.ghost_policies.runner import ghost_policies_run, ghost_policies_run_live
from director.ghost_policies.snapshot import (
    CameraState,
    PoseFrame,
    ProposalRecord,
    SessionSnapshot,
    session_snapshot,
)

__all__ = [
    "CadencePolicy",
    "CameraState",
    "CoverageGapPolicy",
    "FacingEstimate",
    "FacingPolicy",
    "HealthPolicy",
    "HeroStalenessPolicy",
    "Idea",
    "Policy",
    "PoseFrame",
    "ProposalRecord",
    "SessionSnapshot",
    "default_policies",
    "estimate_facing",
    "ghost_policies_run",
    "ghost_policies_run_live",
    "relative_yaw",
    "session_snapshot",
]
