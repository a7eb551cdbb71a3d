from __future__ import annotations

import uuid

from django.conf import settings
from django.core.validators import RegexValidator
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


class Still(models.Model):
    """A full-resolution still from one camera. The original bytes are kept as uploaded; the
    row holds what the camera was doing when it fired. Only `director/stills` writes it."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    session = models.ForeignKey(
        PhotoshootSession, null=True, blank=True, on_delete=models.PROTECT, related_name="stills"
    )
    device = models.ForeignKey("devices.Device", on_delete=models.PROTECT, related_name="stills")
    command = models.ForeignKey(
        "devices.DeviceCommand",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="stills",
    )
    # Shared by the stills of one capture-all: the strip shows their spread.
    batch = models.UUIDField(null=True, blank=True, db_index=True)
    seq = models.PositiveIntegerField(help_text="Per session and device, from 1.")
    # Unique per device (see Meta): a retry is idempotent, another camera's bytes are its own.
    sha256 = models.CharField(max_length=64)
    file = models.FileField(max_length=300)
    thumbnail = models.FileField(max_length=300, blank=True)
    content_type = models.CharField(max_length=32)
    size_bytes = models.PositiveBigIntegerField()
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    thumb_width = models.PositiveIntegerField(null=True, blank=True)
    thumb_height = models.PositiveIntegerField(null=True, blank=True)

    captured_at_device = models.FloatField(help_text="Device clock, unix s, as reported.")
    captured_at = models.DateTimeField(help_text="Mapped to the server's clock.")
    clock_offset_s = models.FloatField(null=True, blank=True, help_text="The offset used.")
    received_at = models.DateTimeField()

    # What the camera was doing when it fired.
    lens = models.CharField(max_length=32)
    zoom = models.FloatField()
    flip_horizontal = models.BooleanField(default=False)
    flip_vertical = models.BooleanField(default=False)
    orientation = models.CharField(max_length=24, blank=True)
    azimuth_deg = models.FloatField(null=True, blank=True)
    distance_m = models.FloatField(null=True, blank=True)
    height_m = models.FloatField(null=True, blank=True)
    meta = models.JSONField(default=dict, help_text="The meta part as the device sent it.")

    class Meta:
        ordering = ["-captured_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["session", "device", "seq"], name="still_seq_unique_per_session_device"
            ),
            models.UniqueConstraint(
                fields=["device", "sha256"], name="still_sha256_unique_per_device"
            ),
        ]
        indexes = [models.Index(fields=["session", "captured_at"])]

    def __str__(self) -> str:
        return f"still {self.seq} of {self.device_id}"


class GhostProposal(models.Model):
    """Something Ghost (a policy, or another AI service) suggests for a live session. The
    operator accepts or vetoes it; only `director/ghost.py` changes it."""

    class Kind(models.TextChoices):
        SWITCH_HERO = "switch_hero", "Switch hero"
        CAPTURE_STILL = "capture_still", "Capture a still"
        CAPTURE_ALL = "capture_all", "Capture all"
        SET_LENS = "set_lens", "Set lens"
        SET_FLIP = "set_flip", "Set flip"
        REPOSITION = "reposition", "Reposition a camera"

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        ACCEPTED = "accepted", "Accepted"
        VETOED = "vetoed", "Vetoed"
        EXPIRED = "expired", "Expired"
        SUPERSEDED = "superseded", "Superseded"
        EXECUTED = "executed", "Executed"
        FAILED = "failed", "Failed"

    class VetoReason(models.TextChoices):
        BAD_FRAMING = "bad_framing", "Bad framing"
        WRONG_MOMENT = "wrong_moment", "Wrong moment"
        DEVICE_PROBLEM = "device_problem", "Device problem"
        OTHER = "other", "Other"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    session = models.ForeignKey(
        PhotoshootSession, on_delete=models.CASCADE, related_name="proposals"
    )
    kind = models.CharField(max_length=16, choices=Kind.choices)
    targets = models.ManyToManyField("devices.Device", blank=True, related_name="+")
    payload = models.JSONField(default=dict)
    rationale = models.CharField(max_length=200)
    confidence = models.FloatField()
    policy = models.CharField(max_length=64)
    priority = models.IntegerField(default=0)
    state = models.CharField(
        max_length=16, choices=State.choices, default=State.PENDING, db_index=True
    )
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    decided_by = models.CharField(max_length=150, blank=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    veto_reason = models.CharField(max_length=16, choices=VetoReason.choices, blank=True)
    veto_note = models.CharField(max_length=200, blank=True)
    superseded_by = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    result = models.TextField(blank=True)

    class Meta:
        ordering = ["-priority", "created_at"]
        indexes = [models.Index(fields=["session", "state"])]

    def __str__(self) -> str:
        return f"{self.kind} ({self.state})"


class ServiceToken(models.Model):
    """A bearer token for another AI service (the music model, say) that posts Ghost proposals
    through `/api/v1/ghost/`. Only the sha256 of the token is kept, with a short prefix to tell
    tokens apart; only `director/service_tokens.py` creates or revokes one."""

    # Proposals record their policy as `external:<name>` in 64 characters.
    NAME_MAX_LENGTH = 55

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(
        max_length=NAME_MAX_LENGTH,
        unique=True,
        validators=[
            RegexValidator(
                r"^[a-z0-9][a-z0-9._-]*$",
                "Use lowercase letters, digits, dots, dashes and underscores, such as "
                "“music-model”.",
            )
        ],
        help_text="The service's name; its proposals show as “external:<name>”.",
    )
    prefix = models.CharField(max_length=16, editable=False)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def policy(self) -> str:
        return f"external:{self.name}"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None


class MusicTrack(models.Model):
    """The session's music track: the file exactly as uploaded, what PyAV found in it, and its
    beat grid. A session has at most one current track; uploading again marks the old one
    replaced (kept, with its file, because cues in the ledger name it). Only
    `director/music/services.py` writes it."""

    class AnalysisState(models.TextChoices):
        PENDING = "pending", "Waiting to analyse"
        ANALYSING = "analysing", "Analysing"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    session = models.ForeignKey(
        PhotoshootSession, on_delete=models.PROTECT, related_name="music_tracks"
    )
    file = models.FileField(max_length=300)
    original_name = models.CharField(max_length=255, help_text="The file name as uploaded.")
    sha256 = models.CharField(max_length=64)
    size_bytes = models.PositiveBigIntegerField()
    container = models.CharField(max_length=64, help_text="PyAV's format name, e.g. ogg.")
    codec = models.CharField(max_length=64, help_text="The audio codec, e.g. vorbis.")
    duration_s = models.FloatField(help_text="Decoded, not as the container claims.")
    sample_rate = models.PositiveIntegerField()
    channels = models.PositiveSmallIntegerField()
    uploaded_by = models.CharField(max_length=150)
    uploaded_at = models.DateTimeField()
    replaced_at = models.DateTimeField(null=True, blank=True)
    replaced_by = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    analysis_state = models.CharField(
        max_length=16,
        choices=AnalysisState.choices,
        default=AnalysisState.PENDING,
        db_index=True,
    )
    analysis_progress = models.FloatField(default=0.0, help_text="0 to 1 while analysing.")
    analysis_error = models.TextField(blank=True)
    analysis_attempts = models.PositiveSmallIntegerField(default=0)
    analysis_started_at = models.DateTimeField(null=True, blank=True)
    analysed_at = models.DateTimeField(null=True, blank=True)
    bpm = models.FloatField(null=True, blank=True, help_text="From a fit of the beat grid.")
    beats = models.JSONField(default=list, help_text="Beat times, seconds into the track.")
    analysis = models.JSONField(
        default=dict, help_text="How the grid was found: method, rates, library versions."
    )

    class Meta:
        ordering = ["-uploaded_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["session"],
                condition=models.Q(replaced_at__isnull=True),
                name="music_one_current_track_per_session",
            )
        ]

    def __str__(self) -> str:
        return self.original_name

    @property
    def is_current(self) -> bool:
        return self.replaced_at is None


class SessionExport(models.Model):
    """A session bundle zipped for download from the session's page. Written by a background
    job with its progress; only `director/export/services.py` changes it."""

    class State(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Exporting"
        DONE = "done", "Ready"
        FAILED = "failed", "Failed"

    OPEN_STATES = (State.QUEUED, State.RUNNING)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    session = models.ForeignKey(PhotoshootSession, on_delete=models.CASCADE, related_name="exports")
    requested_by = models.CharField(max_length=150)
    requested_at = models.DateTimeField()
    copy_stills = models.BooleanField(default=False)
    state = models.CharField(
        max_length=16, choices=State.choices, default=State.QUEUED, db_index=True
    )
    stage = models.CharField(max_length=120, blank=True)
    progress = models.FloatField(default=0.0, help_text="0 to 1.")
    started_at = models.DateTimeField(null=True, blank=True)
    # The job writes this as it goes; a running export that stops writing was interrupted.
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    file = models.CharField(max_length=300, blank=True, help_text="Under MEDIA_ROOT.")
    size_bytes = models.PositiveBigIntegerField(null=True, blank=True)
    sha256 = models.CharField(max_length=64, blank=True)
    summary = models.JSONField(default=dict, help_text="Files, events, pose frames, stills.")

    class Meta:
        ordering = ["-requested_at"]

    def __str__(self) -> str:
        return f"export of {self.session_id} ({self.state})"

    @property
    def is_open(self) -> bool:
        return self.state in self.OPEN_STATES


class PreflightRun(models.Model):
    """One run of preflight started from the Live Director's Preflight page: its checks'
    results as they come, then the go/no-go verdict. Written by a background job; only
    `director/preflight/services.py` changes it. (`manage.py preflight` keeps no row.)"""

    class State(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        DONE = "done", "Done"
        FAILED = "failed", "Failed"

    OPEN_STATES = (State.QUEUED, State.RUNNING)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    requested_by = models.CharField(max_length=150)
    requested_at = models.DateTimeField()
    url = models.CharField(max_length=300, help_text="The deployment the run checks.")
    state = models.CharField(
        max_length=16, choices=State.choices, default=State.QUEUED, db_index=True
    )
    started_at = models.DateTimeField(null=True, blank=True)
    # The job writes this with every result; a running run that stops writing was interrupted.
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    results = models.JSONField(default=list, help_text="The checks' results, in run order.")
    passed = models.BooleanField(null=True, help_text="Go (true) or no-go, once done.")
    error = models.TextField(blank=True, help_text="Why the run itself could not finish.")
    session_id = models.UUIDField(null=True, blank=True, help_text="Its throwaway session.")

    class Meta:
        ordering = ["-requested_at"]

    def __str__(self) -> str:
        return f"preflight {self.pk} ({self.state})"

    @property
    def is_open(self) -> bool:
        return self.state in self.OPEN_STATES
