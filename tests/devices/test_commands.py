"""Commands: issue (with the lens plan), deliver once, acknowledge idempotently, expire."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from devices import services
from devices.models import Device, DeviceCommand
from ledger.models import ProductionEvent
from tests.support.api import register_device

pytestmark = pytest.mark.django_db

IPAD_LENSES = [{"id": "wide", "zoom": 1.0, "hfov_deg": 80.0}]
State = DeviceCommand.State


def _events(type_: str) -> list[dict[str, Any]]:
    return list(ProductionEvent.objects.filter(type=type_).values_list("payload", flat=True))


def test_half_x_on_an_iphone_is_sent_as_the_ultra_wide_lens() -> None:
    device = register_device("iphone-1").device
    command = services.command_issue(device_id=device.pk, type="set_lens", args={"zoom": 0.5})
    assert command.args == {"zoom": 0.5, "lens": "ultra_wide", "digital_zoom": 1.0}
    assert command.state == State.QUEUED
    assert _events("command.sent")[0]["args"]["lens"] == "ultra_wide"


def test_two_x_on_an_iphone_is_the_wide_lens_with_digital_zoom() -> None:
    device = register_device("iphone-1").device
    command = services.command_issue(device_id=device.pk, type="set_lens", args={"zoom": 2})
    assert command.args == {"zoom": 2.0, "lens": "wide", "digital_zoom": 2.0}


def test_half_x_on_an_ipad_is_refused_with_a_reason_and_nothing_is_queued() -> None:
    device = register_device("ipad-1", name="iPad left", kind="ipad", lenses=IPAD_LENSES).device
    with pytest.raises(services.CommandRefused, match="iPad left has no ultra-wide lens"):
        services.command_issue(device_id=device.pk, type="set_lens", args={"zoom": 0.5})
    assert not DeviceCommand.objects.exists()
    assert not _events("command.sent")


@pytest.mark.parametrize(
    ("type_", "args", "message"),
    [
        ("set_lens", {"zoom": "wide"}, "needs a zoom"),
        ("set_lens", {"zoom": True}, "needs a zoom"),
        ("set_flip", {"horizontal": True}, "horizontal and vertical"),
        ("tally", {"state": "red"}, "tally needs a state"),
        ("self_destruct", {}, "not a command"),
    ],
)
def test_malformed_commands_are_refused_before_anything_is_queued(
    type_: str, args: dict[str, Any], message: str
) -> None:
    device = register_device("iphone-1").device
    with pytest.raises(services.CommandRefused, match=message):
        services.command_issue(device_id=device.pk, type=type_, args=args)
    assert not DeviceCommand.objects.exists()


def test_a_command_is_delivered_once_even_when_claimed_twice() -> None:
    device = register_device("iphone-1").device
    command = services.command_issue(
        device_id=device.pk, type="set_flip", args={"horizontal": True, "vertical": False}
    )
    first = services.command_claim(device_id=device.pk, via="socket")
    second = services.command_claim(device_id=device.pk, via="poll")
    assert [c.pk for c in first] == [command.pk]
    assert second == []
    command.refresh_from_db()
    assert command.state == State.DELIVERED
    assert command.delivered_via == "socket"
    assert _events("command.delivered")[0]["via"] == "socket"


def test_commands_are_delivered_oldest_first() -> None:
    device = register_device("iphone-1").device
    ids = [
        services.command_issue(device_id=device.pk, type="tally", args={"state": s}).pk
        for s in ("preview", "live", "off")
    ]
    assert [c.pk for c in services.command_claim(device_id=device.pk, via="poll")] == ids


def test_an_ack_is_idempotent() -> None:
    device = register_device("iphone-1").device
    command = services.command_issue(device_id=device.pk, type="set_lens", args={"zoom": 1})
    services.command_claim(device_id=device.pk, via="poll")
    done, changed = services.command_ack(
        device_id=device.pk, command_id=command.pk, status="done", done_at=1.7e9
    )
    again, changed_again = services.command_ack(
        device_id=device.pk, command_id=command.pk, status="done", detail="different words"
    )
    assert (done.state, changed) == (State.DONE, True)
    assert (again.state, changed_again) == (State.DONE, False)
    assert again.detail == "" and again.done_at == 1.7e9
    assert len(_events("command.acked")) == 1


def test_a_contradicting_ack_is_a_conflict_and_changes_nothing() -> None:
    device = register_device("iphone-1").device
    command = services.command_issue(device_id=device.pk, type="set_lens", args={"zoom": 1})
    services.command_ack(device_id=device.pk, command_id=command.pk, status="failed", detail="x")
    with pytest.raises(services.CommandConflict, match="already failed"):
        services.command_ack(device_id=device.pk, command_id=command.pk, status="done")
    command.refresh_from_db()
    assert command.state == State.FAILED
    assert _events("command.failed")[0]["status"] == "failed"


def test_an_ack_for_another_devices_command_is_not_found() -> None:
    mine = register_device("iphone-1").device
    other = register_device("iphone-2").device
    command = services.command_issue(device_id=mine.pk, type="capture_still")
    with pytest.raises(services.CommandNotFound):
        services.command_ack(device_id=other.pk, command_id=command.pk, status="done")


def test_an_expired_command_is_never_delivered_and_is_marked_expired() -> None:
    device = register_device("iphone-1").device
    command = services.command_issue(device_id=device.pk, type="capture_still")
    DeviceCommand.objects.filter(pk=command.pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    # Before the sweep runs, a claim must not hand it out late.
    assert services.command_claim(device_id=device.pk, via="poll") == []
    assert services.commands_expire_due() == 1
    command.refresh_from_db()
    assert command.state == State.EXPIRED
    assert _events("command.expired") == [
        {"command_id": str(command.pk), "command": "capture_still", "was": "queued"}
    ]
    assert services.commands_expire_due() == 0


def test_a_delivered_command_that_is_never_acknowledged_expires() -> None:
    device = register_device("iphone-1").device
    command = services.command_issue(device_id=device.pk, type="capture_still", ttl_s=5)
    services.command_claim(device_id=device.pk, via="socket")
    DeviceCommand.objects.filter(pk=command.pk).update(expires_at=timezone.now())
    services.commands_expire_due()
    command.refresh_from_db()
    assert command.state == State.EXPIRED
    with pytest.raises(services.CommandConflict, match="expired"):
        services.command_ack(device_id=device.pk, command_id=command.pk, status="done")


def test_a_command_for_an_offline_device_waits_and_is_delivered_when_it_returns() -> None:
    device = register_device("iphone-1", online=False).device
    command = services.command_issue(device_id=device.pk, type="set_lens", args={"zoom": 3})
    assert Device.objects.get(pk=device.pk).status == Device.Status.OFFLINE
    # It comes back (a heartbeat), then polls.
    from tests.support.api import record_beat

    record_beat(device.pk)
    assert [c.pk for c in services.command_claim(device_id=device.pk, via="poll")] == [command.pk]


def test_capture_all_shares_one_fire_time_and_batch_ahead_of_now() -> None:
    devices = [register_device(f"iphone-{i}").device for i in range(3)]
    before = timezone.now()
    commands = services.commands_issue_capture(device_ids=[d.pk for d in devices])
    assert len(commands) == 3
    assert len({c.batch for c in commands}) == 1
    assert len({c.fire_at for c in commands}) == 1
    fire_at = commands[0].fire_at
    assert fire_at is not None
    lead = (fire_at - before).total_seconds()
    assert 0.3 <= lead <= 3.0
    assert commands[0].args == {"fire_at": fire_at.timestamp()}
    assert all(c.expires_at > fire_at for c in commands)


def test_capture_all_waits_longer_for_a_camera_whose_delivery_was_slow() -> None:
    fast, slow = (register_device(f"iphone-{i}").device for i in range(2))
    earlier = services.command_issue(device_id=slow.pk, type="tally", args={"state": "off"})
    DeviceCommand.objects.filter(pk=earlier.pk).update(
        delivered_at=earlier.issued_at + timedelta(milliseconds=600)
    )
    quick = services.commands_issue_capture(device_ids=[fast.pk])
    both = services.commands_issue_capture(device_ids=[fast.pk, slow.pk])
    quick_lead = quick[0].fire_at - quick[0].issued_at  # type: ignore[operator]
    both_lead = both[0].fire_at - both[0].issued_at  # type: ignore[operator]
    assert quick_lead.total_seconds() == pytest.approx(0.3, abs=0.01)
    assert both_lead.total_seconds() == pytest.approx(2 * 0.6 + 0.1, abs=0.01)


def test_capture_all_names_the_cameras_that_are_offline() -> None:
    online = register_device("iphone-1").device
    offline = register_device("iphone-2", name="Cam back", online=False).device
    with pytest.raises(services.CommandRefused, match="Cam back is offline"):
        services.commands_issue_capture(device_ids=[online.pk, offline.pk])
    assert not DeviceCommand.objects.exists()


def test_a_tally_command_records_the_tally_on_the_device() -> None:
    device = register_device("iphone-1").device
    services.command_issue(device_id=device.pk, type="tally", args={"state": "live"})
    assert Device.objects.get(pk=device.pk).tally == "live"


def test_the_sweep_task_expires_due_commands() -> None:
    from devices.tasks import commands_sweep_expired

    device = register_device("iphone-1").device
    command = services.command_issue(device_id=device.pk, type="capture_still", ttl_s=0.001)
    DeviceCommand.objects.filter(pk=command.pk).update(expires_at=timezone.now())
    assert commands_sweep_expired() == 1
