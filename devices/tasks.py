from __future__ import annotations

from celery import shared_task

from devices import selectors, services


@shared_task
def devices_sweep_offline() -> int:
    """Mark offline every device that missed its heartbeats; returns how many it marked."""
    marked = 0
    for device_id in selectors.device_ids_stale():
        device = services.device_mark_offline(device_id=device_id, reason="missed_heartbeats")
        marked += not device.is_online
    return marked


@shared_task
def pairing_code_refresh() -> str:
    """Rotate the pairing code when it expires, so the operator's page shows the new one."""
    return services.pairing_code_get_or_rotate().display


@shared_task
def commands_sweep_expired() -> int:
    """Expire every command whose time ran out; returns how many it expired."""
    return services.commands_expire_due()


@shared_task
def device_clocks_fit() -> int:
    """Fit offset and drift for every online device's clock."""
    return services.device_clocks_fit()
