"""The Celery app. With REDIS_URL it talks to workers; without, tasks run eagerly in-process."""

from __future__ import annotations

import os

from celery import Celery
from celery.signals import worker_process_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "motionmix.settings")

app = Celery("motionmix")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# The periodic work of the scaled mode. The embedded default runs the same tasks from the
# server's ticker (director/ticker.py) instead.
app.conf.beat_schedule = {
    "devices-sweep-offline": {"task": "devices.tasks.devices_sweep_offline", "schedule": 1.0},
    "commands-sweep-expired": {"task": "devices.tasks.commands_sweep_expired", "schedule": 1.0},
    "proposals-sweep-expired": {
        "task": "director.tasks.proposals_sweep_expired",
        "schedule": 1.0,
    },
    # Ghost's policies, for every live session.
    "ghost-policies-tick": {
        "task": "director.tasks.ghost_policies_tick",
        "schedule": float(os.environ.get("MOTIONMIX_GHOST_POLICY_INTERVAL_S", "2")),
    },
    # Cameras of live sessions that stopped publishing (a restart, a drop) are asked again.
    "sessions-publish-reconcile": {
        "task": "director.tasks.sessions_publish_reconcile",
        "schedule": 5.0,
    },
    # Every device's clock: offset and drift over its recent round trips.
    "device-clocks-fit": {"task": "devices.tasks.device_clocks_fit", "schedule": 10.0},
    "session-exports-sweep": {"task": "director.tasks.session_exports_sweep", "schedule": 30.0},
    "pairing-code-refresh": {"task": "devices.tasks.pairing_code_refresh", "schedule": 5.0},
    "ledger-outbox-sweep": {"task": "ledger.tasks.outbox_flush_task", "schedule": 5.0},
    # Music tracks whose beat analysis was queued but never ran (uploads queue it themselves).
    "music-analysis-sweep": {"task": "director.tasks.music_analysis_sweep", "schedule": 30.0},
}


@worker_process_init.connect
def _pushes_from_one_loop(**_: object) -> None:
    """Each worker process sends its live pushes from one long-lived loop (ledger/pushes.py)."""
    from ledger.pushes import push_loop

    push_loop.enable()
