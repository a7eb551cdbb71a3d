from __future__ import annotations

from uuid import UUID

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


@shared_task
def session_export_run(export_id: str) -> str | None:
    """Write, zip and keep one queued session export (queued on commit by its request)."""
    from director.export.jobs import session_export_run as run

    export = run(export_id=UUID(export_id))
    return None if export is None else export.state


@shared_task
def session_exports_sweep() -> int:
    """Mark interrupted exports failed, and run any queued export a lost message left behind."""
    from director.export.jobs import session_exports_run_queued
    from director.export.services import session_exports_sweep_stale

    return session_exports_sweep_stale() + session_exports_run_queued()


@shared_task
def music_analyse(track_id: str) -> str:
    """Find the beat grid of one music track (scaled mode; the embedded ticker runs
    `director.music.jobs.music_analysis_dispatch` instead). Returns the track's state."""
    from uuid import UUID

    from director.music import jobs

    track = jobs.music_analysis_run(track_id=UUID(track_id))
    return track.analysis_state if track is not None else "not due"


@shared_task
def music_analysis_sweep() -> int:
    """Queue the tracks left waiting (a lost message, a worker that died mid-analysis)."""
    from director.music import jobs

    due = jobs.tracks_due(older_than_s=jobs.SWEEP_AFTER_S)
    for track_id in due:
        music_analyse.delay(str(track_id))
    return len(due)


@shared_task
def preflight_run_task(run_id: str) -> str:
    """Start one queued preflight run from the Preflight page (queued on commit by its
    request) on a thread of this worker, and return at once: see preflight_run_in_background."""
    from director.preflight.jobs import preflight_run_in_background

    return preflight_run_in_background(run_id=UUID(run_id)).name
