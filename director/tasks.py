from __future__ import annotations

from celery import shared_task

from director import ghost


@shared_task
def proposals_sweep_expired() -> int:
    """End every Ghost countdown that has run out (in autopilot: carry the proposal out)."""
    return ghost.proposals_expire_due()
