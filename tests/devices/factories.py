from __future__ import annotations

from datetime import timedelta
from typing import Any

import factory
from django.utils import timezone

from devices.models import DeviceCommand


class DeviceCommandFactory(factory.django.DjangoModelFactory[DeviceCommand]):
    """A command waiting for its device; pass `device=` (devices register through the API)."""

    class Meta:
        model = DeviceCommand

    type = "tally"
    args: Any = factory.LazyFunction(lambda: {"state": "live"})
    state = DeviceCommand.State.QUEUED
    issued_at = factory.LazyFunction(timezone.now)
    expires_at = factory.LazyAttribute(lambda command: command.issued_at + timedelta(minutes=1))
