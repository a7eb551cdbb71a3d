from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from django.db import models
from django.utils import timezone

LOW_BATTERY = 0.20
# The card shows a pose rate only while pose keeps arriving: this long after the last update.
# Pose batches may come every 10 s (300 frames at 30 fps): the rate stays shown across a gap.
POSE_LIVE_S = 12.0
# A clock fit older than this gives way to the latest round trip (the fit runs every 10 s).
CLOCK_FIT_FRESH_S = 60.0


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

    class PlacementSource(models.TextChoices):
        OPERATOR = "operator", "Set by the operator"
        DEVICE = "device", "Reported by the device"

    class Tally(models.TextChoices):
        OFF = "off", "Off"
        PREVIEW = "preview", "Preview"
        LIVE = "live", "Live"

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

    # Placement around the subject: azimuth 0 = the subject's front, clockwise from above.
    azimuth_deg = models.FloatField(null=True, blank=True)
    distance_m = models.FloatField(null=True, blank=True)
    height_m = models.FloatField(null=True, blank=True)
    placement_source = models.CharField(max_length=16, choices=PlacementSource.choices, blank=True)
    placed_at = models.DateTimeField(null=True, blank=True)

    # The server's estimate of this device's clock (device - server), from heartbeat round trips.
    clock_offset_s = models.FloatField(null=True, blank=True)
    clock_delay_s = models.FloatField(null=True, blank=True)
    clock_sampled_at = models.DateTimeField(null=True, blank=True)
    # Offset and drift fitted over the recent round trips (devices/services/clocks.py).
    clock_fit_offset_s = models.FloatField(null=True, blank=True, help_text="At clock_fit_at.")
    clock_drift_ppm = models.FloatField(null=True, blank=True)
    clock_uncertainty_s = models.FloatField(null=True, blank=True)
    clock_fit_at = models.DateTimeField(null=True, blank=True, help_text="Server clock.")

    tally = models.CharField(max_length=8, choices=Tally.choices, default=Tally.OFF)

    # Video published to the hero relay (WHIP), as the relay receives it.
    publish_id = models.CharField(max_length=40, blank=True)
    publishing_since = models.DateTimeField(null=True, blank=True)
    publish_codec = models.CharField(max_length=16, blank=True)
    publish_width = models.PositiveIntegerField(null=True, blank=True)
    publish_height = models.PositiveIntegerField(null=True, blank=True)
    publish_fps = models.FloatField(null=True, blank=True)

    # The pose stream's rate as measured from the device's own frame times (pose ingest).
    pose_fps = models.FloatField(null=True, blank=True)
    pose_at = models.DateTimeField(null=True, blank=True, help_text="When pose_fps was written.")

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

    @property
    def is_publishing(self) -> bool:
        return self.publishing_since is not None

    @property
    def publish_size(self) -> str:
        if self.publish_width is None or self.publish_height is None:
            return ""
        return f"{self.publish_width}\u00d7{self.publish_height}"

    def clock_offset_now(self, now: datetime | None = None) -> float | None:
        """Device minus server clock now: the fitted offset and drift while the fit is fresh,
        else the best recent round trip's offset."""
        now = now or timezone.now()
        if (
            self.clock_fit_at is not None
            and self.clock_fit_offset_s is not None
            and now - self.clock_fit_at <= timedelta(seconds=CLOCK_FIT_FRESH_S)
        ):
            elapsed = (now - self.clock_fit_at).total_seconds()
            return self.clock_fit_offset_s + (self.clock_drift_ppm or 0.0) * 1e-6 * elapsed
        return self.clock_offset_s

    @property
    def clock_label(self) -> str:
        """The card's clock line: "+312.4 ms ± 0.6 · +41 ppm" (device minus server)."""
        if self.clock_fit_offset_s is not None and self.clock_uncertainty_s is not None:
            drift = self.clock_drift_ppm or 0.0
            return (
                f"{self.clock_fit_offset_s * 1000:+.1f} ms \u00b1 "
                f"{self.clock_uncertainty_s * 1000:.1f} \u00b7 {drift:+.0f} ppm"
            )
        if self.clock_offset_s is not None:
            return f"{self.clock_offset_s * 1000:+.1f} ms (fitting)"
        return ""

    @property
    def pose_live(self) -> bool:
        """Pose arrived recently enough for the card to show its rate."""
        return (
            self.pose_fps is not None
            and self.pose_at is not None
            and timezone.now() - self.pose_at <= timedelta(seconds=POSE_LIVE_S)
        )

    @property
    def is_placed(self) -> bool:
        return self.azimuth_deg is not None

    def lens_hfov_deg(self, lens_id: str | None = None) -> float | None:
        """The horizontal field of view of a lens (default: the active one), as registered."""
        wanted = lens_id or self.lens
        for lens in self.lenses:
            if lens["id"] == wanted:
                return float(lens["hfov_deg"])
        return None


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


class RegisterAttempt(models.Model):
    """A register call the rate limit let through (devices/ratelimit.py), successful or not;
    counted per address and per install id within the window, and pruned after it."""

    address = models.GenericIPAddressField(unpack_ipv4=True)
    install_id = models.CharField(max_length=128)
    at = models.DateTimeField(db_index=True)

    class Meta:
        indexes = [
            models.Index(fields=["address", "at"]),
            models.Index(fields=["install_id", "at"]),
        ]

    def __str__(self) -> str:
        return f"{self.install_id} from {self.address} at {self.at:%H:%M:%S}"


class DeviceCommand(models.Model):
    """A command for one device: queued, delivered once (socket or long poll), then
    acknowledged. Only `devices/services/commands.py` changes its state."""

    class Type(models.TextChoices):
        SET_LENS = "set_lens", "Set lens"
        SET_FLIP = "set_flip", "Set flip"
        CAPTURE_STILL = "capture_still", "Capture still"
        START_PUBLISH = "start_publish", "Start publishing"
        STOP_PUBLISH = "stop_publish", "Stop publishing"
        TALLY = "tally", "Tally"

    class State(models.TextChoices):
        QUEUED = "queued", "Queued"
        DELIVERED = "delivered", "Delivered"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"
        REJECTED = "rejected", "Rejected"
        EXPIRED = "expired", "Expired"

    class Via(models.TextChoices):
        SOCKET = "socket", "WebSocket"
        POLL = "poll", "Long poll"

    OPEN_STATES = (State.QUEUED, State.DELIVERED)
    FINAL_STATES = (State.DONE, State.FAILED, State.REJECTED, State.EXPIRED)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="commands")
    type = models.CharField(max_length=32, choices=Type.choices)
    args = models.JSONField(default=dict)
    state = models.CharField(
        max_length=16, choices=State.choices, default=State.QUEUED, db_index=True
    )
    issued_at = models.DateTimeField()
    fire_at = models.DateTimeField(null=True, blank=True, help_text="Server clock.")
    expires_at = models.DateTimeField()
    # Commands sent together (capture all) share a batch; stills find their siblings by it.
    batch = models.UUIDField(null=True, blank=True, db_index=True)
    # The photoshoot session the command was issued for, if any (director owns sessions).
    session_id = models.UUIDField(null=True, blank=True, db_index=True)
    issued_by = models.CharField(max_length=150, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    delivered_via = models.CharField(max_length=8, choices=Via.choices, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True, help_text="Ack or expiry, server.")
    done_at = models.FloatField(null=True, blank=True, help_text="Device clock, unix s.")
    detail = models.TextField(blank=True)

    class Meta:
        ordering = ["issued_at"]
        indexes = [models.Index(fields=["device", "state", "issued_at"])]

    def __str__(self) -> str:
        return f"{self.type} → {self.device_id}"

    @property
    def is_open(self) -> bool:
        return self.state in self.OPEN_STATES


class ClockSample(models.Model):
    """One NTP-style exchange between a device and the server (heartbeat round trip).

    t0 `sent_at` and t3 `returned_at` are on the device's clock, t1 `received_at` and t2
    `server_time` on the server's. offset = device clock - server clock; delay = the round trip
    minus the server's time in hand. The training export maps device times with these.
    """

    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="clock_samples")
    at = models.DateTimeField(help_text="When the server stored the sample.")
    sent_at = models.FloatField()
    received_at = models.FloatField()
    server_time = models.FloatField()
    returned_at = models.FloatField()
    offset_s = models.FloatField()
    delay_s = models.FloatField()

    class Meta:
        ordering = ["at"]
        indexes = [models.Index(fields=["device", "at"])]

    def __str__(self) -> str:
        return f"{self.device_id} offset {self.offset_s * 1000:.1f} ms"


class PoseBatch(models.Model):
    """One batch of pose frames from one device, stored as one row (never a row per frame).

    `frames` is compact JSON: `[[t, [x, y, c, x, y, c, ...]], ...]`, sorted by t, t rounded to
    6 decimals and x, y, c to 4. `t`, `first_t` and `last_t` are on the device's clock; batches
    may arrive late or out of order, and the export orders them (by first_t, then t).
    """

    class Format(models.TextChoices):
        COCO17 = "coco17", "COCO, 17 keypoints"
        VISION19 = "vision19", "Apple Vision, 19 keypoints"
        MEDIAPIPE33 = "mediapipe33", "MediaPipe, 33 keypoints"

    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="pose_batches")
    # The device's live photoshoot session when the batch arrived, if any (director owns them).
    session_id = models.UUIDField(null=True, blank=True)
    format = models.CharField(max_length=16, choices=Format.choices)
    first_t = models.FloatField(help_text="Device clock, unix s.")
    last_t = models.FloatField(help_text="Device clock, unix s.")
    frame_count = models.PositiveIntegerField()
    received_at = models.DateTimeField(help_text="Server clock.")
    frames = models.TextField(help_text="[[t, [x, y, c, ...]], ...] as compact JSON.")

    class Meta:
        indexes = [
            models.Index(fields=["device", "session_id", "first_t"]),
            models.Index(fields=["device", "received_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.frame_count} {self.format} frames from {self.device_id}"
