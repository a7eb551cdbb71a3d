from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models


class PhotoshootSession(models.Model):
    """A photoshoot: draft, then live, then ended. Only director/services.py changes it."""

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        LIVE = "live", "Live"
        ENDED = "ended", "Ended"

    class GhostMode(models.TextChoices):
        OFF = "off", "Off"
        SUPERVISED = "supervised", "Supervised"
        AUTOPILOT = "autopilot", "Autopilot"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=120)
    notes = models.TextField(blank=True)
    operator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="photoshoot_sessions"
    )
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.DRAFT, db_index=True
    )
    devices = models.ManyToManyField(
        "devices.Device", blank=True, related_name="photoshoot_sessions"
    )
    hero = models.ForeignKey(
        "devices.Device", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    ghost_mode = models.CharField(
        max_length=16, choices=GhostMode.choices, default=GhostMode.SUPERVISED
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None:
            return None
        from django.utils import timezone

        return ((self.ended_at or timezone.now()) - self.started_at).total_seconds()
