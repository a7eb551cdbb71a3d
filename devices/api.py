"""Device API v1: the contract with the capture app (see ARCHITECTURE.md).

Every error answers `{"error": code, "detail": text}` with the contract's status codes.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from typing import Any, Literal
from uuid import UUID

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from ninja import NinjaAPI, Query, Schema, Status
from ninja.decorators import decorate_view
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.parser import Parser
from ninja.security import HttpBearer
from pydantic import ConfigDict, Field, SkipValidation, field_validator

from devices import delivery, ratelimit, selectors, services
from devices.models import Device, DeviceCommand

# The same caps motionmix/limits.py enforces before the body is read (64 KiB and 1 MiB by
# default): a full pose batch (300 frames of 33 keypoints at a phone's full float precision) is
# about 600 KB of JSON, which the general limit would refuse.
JSON_BODY_LIMIT: int = settings.MOTIONMIX_MAX_BODY_BYTES
POSE_BODY_LIMIT: int = settings.MOTIONMIX_POSE_MAX_BODY_BYTES
MAX_WAIT_S = 25.0

# --- Errors ---------------------------------------------------------------------------------


def error_response(
    status: int, code: str, detail: str, headers: dict[str, str] | None = None
) -> JsonResponse:
    response = JsonResponse({"error": code, "detail": detail}, status=status)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


HTTP_ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    429: "too_many_requests",
}


class StrictJsonParser(Parser):
    def parse_body(self, request: HttpRequest) -> dict[str, Any]:
        try:
            data = json.loads(request.body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            # Ninja wraps parser errors in a generic 400; keep the reason for our handler.
            request.motionmix_parse_error = f"The body is not valid JSON: {exc}."  # type: ignore[attr-defined]
            raise
        if not isinstance(data, dict):
            request.motionmix_parse_error = "The body must be a JSON object."  # type: ignore[attr-defined]
            raise ValueError("not an object")
        return data


api = NinjaAPI(
    title="MotionMix Device API",
    version="1",
    description="The contract between the capture app and the MotionMix server.",
    urls_namespace="device_api",
    docs_url=None,
    parser=StrictJsonParser(),
)


def _format_validation_errors(errors: list[dict[str, Any]]) -> str:
    parts = []
    for error in errors:
        loc = [str(p) for p in error.get("loc", ()) if p not in ("body", "payload", "beat")]
        where = ".".join(loc) or "body"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts)


@api.exception_handler(ValidationError)
def _validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    return error_response(400, "invalid", _format_validation_errors(exc.errors))


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    parse_error = getattr(request, "motionmix_parse_error", None)
    if parse_error:
        return error_response(400, "bad_json", parse_error)
    headers = {}
    detail = str(exc)
    if isinstance(exc, AuthenticationError):
        headers["WWW-Authenticate"] = 'Bearer realm="motionmix-devices"'
        detail = "A valid device token is required: send Authorization: Bearer <token>."
    return error_response(
        exc.status_code, HTTP_ERROR_CODES.get(exc.status_code, "error"), detail, headers
    )


@api.exception_handler(services.PairingRefused)
def _pairing_refused(request: HttpRequest, exc: Exception) -> HttpResponse:
    return error_response(403, "pairing_refused", str(exc))


@api.exception_handler(services.TooManyPairingAttempts)
def _too_many(request: HttpRequest, exc: services.TooManyPairingAttempts) -> HttpResponse:
    return error_response(
        429, "too_many_attempts", str(exc), {"Retry-After": str(exc.retry_after_s)}
    )


@api.exception_handler(ratelimit.RegisterRateLimited)
def _register_rate_limited(
    request: HttpRequest, exc: ratelimit.RegisterRateLimited
) -> HttpResponse:
    return error_response(
        429, "too_many_attempts", str(exc), {"Retry-After": str(exc.retry_after_s)}
    )


@api.exception_handler(services.CommandNotFound)
def _command_not_found(request: HttpRequest, exc: Exception) -> HttpResponse:
    return error_response(404, "not_found", str(exc))


@api.exception_handler(services.CommandConflict)
def _command_conflict(request: HttpRequest, exc: Exception) -> HttpResponse:
    return error_response(409, "conflict", str(exc))


@api.exception_handler(services.PoseTooManyFrames)
def _pose_too_many_frames(request: HttpRequest, exc: Exception) -> HttpResponse:
    return error_response(413, "too_large", str(exc))


@api.exception_handler(services.PoseRejected)
def _pose_rejected(request: HttpRequest, exc: Exception) -> HttpResponse:
    return error_response(400, "invalid", str(exc))


@api.exception_handler(services.HeartbeatRejected)
def _heartbeat_rejected(request: HttpRequest, exc: Exception) -> HttpResponse:
    return error_response(400, "invalid", str(exc))


def json_body(*, max_bytes: int = JSON_BODY_LIMIT) -> Callable[..., Any]:
    """Check the media type and size of a JSON call before anything reads the body."""

    def decorator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            content_type = request.content_type or ""
            if content_type != "application/json":
                return error_response(
                    415,
                    "unsupported_media_type",
                    f"Send the body as application/json, not {content_type or 'nothing'}.",
                )
            try:
                declared = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                declared = 0
            if declared > max_bytes:
                return error_response(
                    413, "too_large", f"The body is {declared} bytes; the limit is {max_bytes}."
                )
            try:
                if len(request.body) > max_bytes:
                    return error_response(
                        413, "too_large", f"The body is larger than the limit of {max_bytes} bytes."
                    )
            except RequestDataTooBig:
                return error_response(413, "too_large", "The body is larger than the server takes.")
            return view(request, *args, **kwargs)

        return wrapper

    return decorator


# --- Auth -----------------------------------------------------------------------------------


class DeviceToken(HttpBearer):
    def authenticate(self, request: HttpRequest, token: str) -> Device | None:
        return selectors.device_get_by_token(token=token)


device_auth = DeviceToken()


def _device(request: HttpRequest) -> Device:
    device = request.auth  # type: ignore[attr-defined]
    assert isinstance(device, Device)
    return device


# --- Schemas --------------------------------------------------------------------------------


Orientation = Literal[
    "portrait",
    "portrait_upside_down",
    "landscape_left",
    "landscape_right",
    "face_up",
    "face_down",
    "unknown",
]


class StrictSchema(Schema):
    # Wrong types are errors, not coercions: "0.5" is not a battery level. Unknown fields are
    # ignored, so the capture app may add fields before the server knows them.
    model_config = ConfigDict(strict=True, extra="ignore")

    @field_validator("*")
    @classmethod
    def _storable_text(cls, value: object) -> object:
        # PostgreSQL text cannot hold NUL: refuse it here (400) rather than fail the insert (500).
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("text must not contain NUL characters")
        return value


class LensIn(StrictSchema):
    id: str = Field(min_length=1, max_length=32)
    zoom: float = Field(gt=0, le=100, allow_inf_nan=False)
    hfov_deg: float = Field(gt=0, lt=180, allow_inf_nan=False)


class RegisterIn(StrictSchema):
    pairing_code: str = Field(min_length=1, max_length=32)
    install_id: str = Field(min_length=1, max_length=128)
    name: str = Field(min_length=1, max_length=64)
    kind: Literal["iphone", "ipad", "webcam"]
    model: str = Field(default="", max_length=64)
    os_version: str = Field(default="", max_length=32)
    app_version: str = Field(default="", max_length=32)
    lenses: list[LensIn] = Field(min_length=1, max_length=8)

    @field_validator("lenses")
    @classmethod
    def _unique_lens_ids(cls, lenses: list[LensIn]) -> list[LensIn]:
        ids = [lens.id for lens in lenses]
        if len(set(ids)) != len(ids):
            raise ValueError("lens ids must be unique")
        return lenses


class RegisterOut(Schema):
    device_id: str
    token: str
    heartbeat_interval_s: float


class FlipIn(StrictSchema):
    horizontal: bool
    vertical: bool


class ClockIn(StrictSchema):
    """The device's previous heartbeat exchange: t0 and t3 on its clock, t1 and t2 from the
    server's answer. The server estimates the device's clock offset from these."""

    sent_at: float = Field(ge=1e9, le=4.1e9, allow_inf_nan=False)
    received_at: float = Field(ge=1e9, le=4.1e9, allow_inf_nan=False)
    server_time: float = Field(ge=1e9, le=4.1e9, allow_inf_nan=False)
    returned_at: float = Field(ge=1e9, le=4.1e9, allow_inf_nan=False)


class PlacementIn(StrictSchema):
    """Where the device stands, if it knows (e.g. from an AR anchor); any part may be left out."""

    azimuth_deg: float | None = Field(default=None, ge=-360, le=720, allow_inf_nan=False)
    distance_m: float | None = Field(default=None, ge=0.1, le=50, allow_inf_nan=False)
    height_m: float | None = Field(default=None, ge=-5, le=20, allow_inf_nan=False)


class HeartbeatIn(StrictSchema):
    # 2001..2100: a phone's clock may be off, but not by decades.
    sent_at: float = Field(
        ge=1e9, le=4.1e9, allow_inf_nan=False, description="Device clock, unix seconds."
    )
    battery: float = Field(ge=0, le=1, allow_inf_nan=False)
    charging: bool
    thermal: Literal["nominal", "fair", "serious", "critical"]
    lens: str = Field(min_length=1, max_length=32)
    zoom: float = Field(gt=0, le=100, allow_inf_nan=False)
    orientation: Orientation
    flip: FlipIn
    # The column is a PositiveIntegerField: PostgreSQL's integer stops at 2**31 - 1.
    storage_free_mb: int = Field(ge=0, le=2**31 - 1)
    fps: float = Field(ge=0, le=240, allow_inf_nan=False)
    clock: ClockIn | None = Field(
        default=None, description="The previous exchange, for the clock offset estimate."
    )
    placement: PlacementIn | None = Field(
        default=None, description="The device's own idea of where it stands, if it has one."
    )


class HeartbeatOut(Schema):
    server_time: float
    received_at: float
    pending_commands: int
    clock_offset_s: float | None = Field(
        description="The server's estimate of device clock minus server clock, in seconds: "
        "the offset and drift fitted over the device's recent round trips while that fit is "
        "fresh, else its best recent round trip."
    )


class CommandOut(Schema):
    id: str
    type: str
    args: dict[str, Any]
    issued_at: float = Field(description="Server clock, unix s.")
    fire_at: float | None = Field(description="Server clock, unix s; null: at once.")
    expires_at: float = Field(description="Server clock, unix s; do not act after this.")
    clock_offset_s: float | None = Field(
        description="Device clock minus server clock as the server estimates it: fire at "
        "fire_at + clock_offset_s on the device's clock."
    )


class CommandsOut(Schema):
    commands: list[CommandOut]
    clock_offset_s: float | None


class AckIn(StrictSchema):
    status: Literal["done", "failed", "rejected"]
    detail: str = Field(default="", max_length=2000)
    done_at: float | None = Field(
        default=None, ge=1e9, le=4.1e9, allow_inf_nan=False, description="Device clock, unix s."
    )


class AckOut(Schema):
    id: str
    state: str
    changed: bool


class PoseFrameIn(Schema):
    t: float = Field(description="Device clock, unix s.")
    keypoints: list[list[float]] = Field(
        description="[x, y, confidence] per keypoint, confidence 0..1; 17, 19 or 33 of them "
        "as the format says."
    )


class PoseIn(StrictSchema):
    format: Literal["coco17", "vision19", "mediapipe33"]
    # Documented as frames but checked by `services.pose_frames_check`, in bulk and with errors
    # that name the frame (`frames[12].keypoints: ...`): pydantic would build 10,000 objects.
    frames: SkipValidation[list[PoseFrameIn]] = Field(
        description="1 to MOTIONMIX_POSE_MAX_FRAMES (default 300) frames; any order."
    )


class PoseOut(Schema):
    accepted: int


class ErrorOut(Schema):
    error: str
    detail: str


ERRORS: dict[int, type[Schema]] = {
    code: ErrorOut for code in (400, 401, 403, 404, 409, 413, 415, 422, 429)
}


def heartbeat_from_schema(beat: HeartbeatIn) -> services.Heartbeat:
    return services.Heartbeat(
        sent_at=beat.sent_at,
        battery=beat.battery,
        charging=beat.charging,
        thermal=beat.thermal,
        lens=beat.lens,
        zoom=beat.zoom,
        orientation=beat.orientation,
        flip_horizontal=beat.flip.horizontal,
        flip_vertical=beat.flip.vertical,
        storage_free_mb=beat.storage_free_mb,
        fps=beat.fps,
        placement=None
        if beat.placement is None
        else services.ReportedPlacement(**beat.placement.model_dump()),
        round_trip=None
        if beat.clock is None
        else services.RoundTrip(
            sent_at=beat.clock.sent_at,
            received_at=beat.clock.received_at,
            server_time=beat.clock.server_time,
            returned_at=beat.clock.returned_at,
        ),
    )


# --- Endpoints ------------------------------------------------------------------------------


@api.post(
    "/devices/register",
    response={200: RegisterOut, 201: RegisterOut, **ERRORS},
    summary="Pair and register a device",
    description="429 `too_many_attempts` with Retry-After after too many calls from one "
    "address (MOTIONMIX_REGISTER_MAX_PER_ADDRESS) or for one install_id "
    "(MOTIONMIX_REGISTER_MAX_PER_INSTALL) within MOTIONMIX_REGISTER_WINDOW_S, or too many "
    "wrong pairing codes from one address.",
)
@decorate_view(json_body())
def register(request: HttpRequest, payload: RegisterIn) -> Status[dict[str, Any]]:
    address = ratelimit.client_address(request)
    ratelimit.register_attempt_admit(address=address, install_id=payload.install_id)
    registration = services.device_register(address=address, **payload.model_dump())
    return Status(
        201 if registration.created else 200,
        {
            "device_id": str(registration.device.pk),
            "token": registration.token,
            "heartbeat_interval_s": settings.MOTIONMIX_HEARTBEAT_INTERVAL_S,
        },
    )


@api.post(
    "/devices/heartbeat",
    auth=device_auth,
    response={200: HeartbeatOut, **ERRORS},
    summary="Report the device's state; answers with the server's clock",
    description="Served by the group-commit fast path in devices/heartbeats.py under ASGI; "
    "this view is the same contract for other servers and documents it.",
)
@decorate_view(json_body())
def heartbeat(request: HttpRequest, beat: HeartbeatIn) -> dict[str, Any]:
    received_at = timezone.now()
    device = _device(request)
    stored = services.device_heartbeat(
        device_id=device.pk, received_at=received_at, beat=heartbeat_from_schema(beat)
    )
    return {
        "server_time": time.time(),
        "received_at": received_at.timestamp(),
        "pending_commands": selectors.command_pending_count(device_id=device.pk),
        "clock_offset_s": stored.clock_offset_now(),
    }


@api.get(
    "/devices/commands",
    auth=device_auth,
    response={200: CommandsOut, **ERRORS},
    summary="Long poll for commands",
    description="Answers as soon as the device has commands queued, or with none after `wait` "
    "seconds. Each command is handed out once (here or on the device WebSocket) and never "
    "after it expires.",
)
async def commands(
    request: HttpRequest, wait: float = Query(0.0, ge=0, le=MAX_WAIT_S)
) -> dict[str, Any]:
    device = _device(request)
    claimed = await delivery.commands_wait(
        device_id=device.pk, wait_s=wait, via=DeviceCommand.Via.POLL
    )
    offset = await delivery.clock_offset(device_id=device.pk)
    return {
        "commands": [delivery.command_json(c, offset) for c in claimed],
        "clock_offset_s": offset,
    }


@api.post(
    "/devices/commands/{command_id}/ack",
    auth=device_auth,
    response={200: AckOut, **ERRORS},
    summary="Acknowledge a command",
    description="Idempotent: the same answer again changes nothing (changed: false).",
)
@decorate_view(json_body())
def ack(request: HttpRequest, command_id: UUID, payload: AckIn) -> dict[str, Any]:
    command, changed = services.command_ack(
        device_id=_device(request).pk, command_id=command_id, **payload.model_dump()
    )
    return {"id": str(command.pk), "state": command.state, "changed": changed}


@api.post(
    "/pose",
    auth=device_auth,
    response={202: PoseOut, **ERRORS},
    summary="Send a batch of pose frames",
    description="One batch of 1 to MOTIONMIX_POSE_MAX_FRAMES frames (default 300, 10 s at 30 "
    "fps) in one format; the body may be up to 1 MiB. Frames out of order are sorted, and late "
    "batches are kept. A malformed batch is refused whole with 400, its detail naming the frame "
    "(`frames[12].keypoints: coco17 needs 17 keypoints, got 16`); too many frames answer 413 "
    "`too_large`: split the batch.",
)
@decorate_view(json_body(max_bytes=POSE_BODY_LIMIT))
def pose(request: HttpRequest, payload: PoseIn) -> Status[dict[str, Any]]:
    """202 `{accepted}`. More frames than the limit is 413 (`too_large`, like a body over the
    size limit: the client must send less), not 400; every other malformed batch is 400."""
    accepted = services.pose_batch_ingest(
        device_id=_device(request).pk, format=payload.format, frames=payload.frames
    )
    return Status(202, {"accepted": accepted})
