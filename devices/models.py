from __future__ import annotations

import uuid

from django.db import models

LOW_BATTERY = 0.20


class Device(models.Model):
    class Kind(models.TextChoices):
        IPHONE = "iphone", "iPhone"
        IPAD = "ipad", "iPad"
        WEBCAM = "webcam", "Webcam"

    class Status(models.TextChoices):
        ONLINE = "online", "Online"
        OFFLINE = "offline", "Offline"

    class Thermal(models.TextChoices):
        NOMINAL = "nominal", "Nominal"
        FAIR = "fair", "Fair"
        SERIOUS = "serious", "Serious"
        CRITICAL = "critical", "Critical"

    class Orientation(models.TextChoices):
        PORTRAIT = "portrait", "Portrait"
        PORTRAIT_UPSIDE_DOWN = "portrait_upside_down", "Portrait, upside down"
        LANDSCAPE_LEFT = "landscape_left", "Landscape left"
        LANDSCAPE_RIGHT = "landscape_right", "Landscape right"
        FACE_UP = "face_up", "Face up"
        FACE_DOWN = "face_down", "Face down"
        UNKNOWN = "unknown", "Unknown"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    install_id = models.CharField(max_length=128, unique=True)
    name = models.CharField(max_length=64)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    model = models.CharField(max_length=64, blank=True)
    os_version = models.CharField(max_length=32, blank=True)
    app_version = models.CharField(max_length=32, blank=True)
    lenses = models.JSONField(default=list, help_text="[{id, zoom, hfov_deg}] as reported.")
    token_hash = models.CharField(max_length=64, unique=True, editable=False)

    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.OFFLINE, db_index=True
    )
    registered_at = models.DateTimeField()
    last_seen_at = models.DateTimeField(null=True, blank=True, db_index=True)
    last_sent_at = models.FloatField(null=True, blank=True, help_text="Device clock, unix s.")

    battery = models.FloatField(null=True, blank=True)
    charging = models.BooleanField(null=True, blank=True)
    thermal = models.CharField(max_length=16, choices=Thermal.choices, blank=True)
    lens = models.CharField(max_length=32, blank=True)
    zoom = models.FloatField(null=True, blank=True)
    orientation = models.CharField(max_length=24, choices=Orientation.choices, blank=True)
    flip_horizontal = models.BooleanField(default=False)
    flip_vertical = models.BooleanField(default=False)
    storage_free_mb = models.PositiveIntegerField(null=True, blank=True)
    fps = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["name", "registered_at"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_online(self) -> bool:
        return self.status == self.Status.ONLINE

    @property
    def battery_percent(self) -> int | None:
        return None if self.battery is None else round(self.battery * 100)

    @property
    def battery_low(self) -> bool:
        return self.battery is not None and self.battery < LOW_BATTERY and not self.charging

    @property
    def thermal_warning(self) -> bool:
        return self.thermal in {self.Thermal.SERIOUS, self.Thermal.CRITICAL}

    @property
    def lens_ids(self) -> list[str]:
        return [lens["id"] for lens in self.lenses]


class PairingCode(models.Model):
    """The code a phone must show to register. One is current; old ones are kept for audit."""

    code = models.CharField(max_length=16)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    retired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"pairing code of {self.created_at:%Y-%m-%d %H:%M}"

    @property
    def display(self) -> str:
        return f"{self.code[:3]}-{self.code[3:]}"


class PairingFailure(models.Model):
    """A register call with a wrong pairing code; counted per address for the 429 limit."""

    address = models.GenericIPAddressField(unpack_ipv4=True)
    at = models.DateTimeField(db_index=True)

    class Meta:
        indexes = [models.Index(fields=["address", "at"])]

    def __str__(self) -> str:
        return f"{self.address} at {self.at:%H:%M:%S}"


class DeviceCommand(models.Model):
    """A command for one device. Delivery and acknowledgement arrive with the control issue;
    the heartbeat already reports how many are waiting."""

    class State(models.TextChoices):
        QUEUED = "queued", "Queued"
        DELIVERED = "delivered", "Delivered"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"
        REJECTED = "rejected", "Rejected"
        EXPIRED = "expired", "Expired"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="commands")
    type = models.CharField(max_length=32)
    args = models.JSONField(default=dict)
    state = models.CharField(
        max_length=16, choices=State.choices, default=State.QUEUED, db_index=True
    )
    issued_at = models.DateTimeField()
    fire_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField()

    class Meta:
        ordering = ["issued_at"]

    def __str__(self) -> str:
        return f"{self.type} → {self.device_id}"
