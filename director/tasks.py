from __future__ import annotations

from celery import shared_task

from director import ghost, services
from director.ghost_policies import runner as ghost_policies


@shared_task
def proposals_sweep_expired() -> int:
    """End every Ghost countdown that has run out (in autopilot: carry the proposal out), and
    complete the crew moves whose camera has been placed since."""
    return ghost.proposals_expire_due() + ghost.repositions_complete_due()


@shared_task
def ghost_policies_tick() -> int:
    """Run Ghost's policies for every live session; returns how many proposals were queued."""
    return ghost_policies.ghost_policies_run_live()


@shared_task
def sessions_publish_reconcile() -> int:
    """Ask the cameras of live sessions that are not publishing to publish (again)."""
    return services.sessions_publish_reconcile()
