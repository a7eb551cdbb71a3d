from __future__ import annotations

import uuid

from django.db import models


class ProductionEvent(models.Model):
    """The outbox: one row per ledger event, appended in the same transaction as the change.

    `session_id` and `device_id` are plain ids, not foreign keys: the ledger knows neither app
    above it, and an event must outlive the row it describes.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "Waiting to sync"
        SENDING = "sending", "Sending"
        SYNCED = "synced", "Synced"
        FAILED = "failed", "Failed"

    event_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    session_id = models.UUIDField(null=True, blank=True, db_index=True)
    stream = models.CharField(max_length=64, help_text="The sequence this event is numbered in.")
    seq = models.PositiveBigIntegerField()
    type = models.CharField(max_length=64, db_index=True)
    occurred_at = models.DateTimeField(db_index=True)
    device_id = models.UUIDField(null=True, blank=True, db_index=True)
    payload = models.JSONField(default=dict)
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True
    )
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    synced_at = models.DateTimeField(null=True, blank=True)
    # When a flush claimed the row; a claim older than the lease is taken back (crashed flush).
    claimed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["stream", "seq"]
        constraints = [
            models.UniqueConstraint(fields=["stream", "seq"], name="ledger_event_stream_seq"),
        ]

    def __str__(self) -> str:
        return f"{self.type} #{self.seq} ({self.stream})"


class Sequence(models.Model):
    """The last seq handed out in one stream; its row is locked to number events gap-free."""

    stream = models.CharField(max_length=64, primary_key=True)
    last_seq = models.PositiveBigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.stream}: {self.last_seq}"
