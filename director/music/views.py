"""The operator's music endpoints on the Live Director (login required, as every operator
page is): upload the track, stream it to the page's <audio> element, record cues. Thin:
parse, select, call one service, render."""

from __future__ import annotations

import json
import math
import mimetypes
from typing import Any
from uuid import UUID

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.core.files.storage import default_storage
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.http.multipartparser import MultiPartParserError
from django.template.loader import render_to_string
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_GET, require_POST

from director import selectors as session_selectors
from director.models import MusicTrack, PhotoshootSession
from director.music import selectors, services
from director.music.ranges import ranged_file_response
from director.stills.upload import FILE_FIELD, StillUploadHandler
from director.views import _toast

PANEL_TEMPLATE = "director/partials/music_panel.html"
MULTIPART_OVERHEAD_BYTES = 64 * 1024
CUE_MAX_BYTES = 4096
CONTENT_TYPES = {
    "ogg": "audio/ogg",
    "mp3": "audio/mpeg",
    "wav": "audio/wav",
    "flac": "audio/flac",
    "aac": "audio/aac",
    "mov": "audio/mp4",
    "matroska": "audio/webm",
    "aiff": "audio/aiff",
}


def _panel(session: PhotoshootSession) -> str:
    return render_to_string(PANEL_TEMPLATE, selectors.music_panel_context(session=session))


def _refused(status: int, message: str) -> HttpResponse:
    response = HttpResponse(message, status=status, content_type="text/plain; charset=utf-8")
    return _toast(response, message, "error")


def content_type_of(track: MusicTrack) -> str:
    for name in track.container.split(","):
        if name in CONTENT_TYPES:
            return CONTENT_TYPES[name]
    guessed, _ = mimetypes.guess_type(track.original_name)
    return guessed or "application/octet-stream"


@require_GET
def music_panel(request: HttpRequest, session_id: UUID) -> HttpResponse:
    session = session_selectors.session_get_for_operator(user=request.user, session_id=session_id)
    return HttpResponse(_panel(session))


@csrf_exempt
@require_POST
def music_upload(request: HttpRequest, session_id: UUID) -> HttpResponse:
    """Multipart `file` → 201 with the panel. Refusals: 400 (not audio, corrupt, truncated,
    empty), 413 (over MOTIONMIX_MUSIC_MAX_BYTES), 404, 409 (the session ended).

    The upload handler must be set before anything reads the body, and the CSRF middleware
    reads it for a POST: so the check runs here, after (Django's documented way)."""
    session = session_selectors.session_get_for_operator(user=request.user, session_id=session_id)
    max_bytes = settings.MOTIONMIX_MUSIC_MAX_BYTES
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > max_bytes + MULTIPART_OVERHEAD_BYTES:
        return _refused(413, _too_large(max_bytes))
    # The file streams to disk, hashed, cut at the limit.
    handler = StillUploadHandler(request, max_bytes=max_bytes)
    request.upload_handlers = [handler]
    try:
        return _upload(request, session, handler)
    finally:
        handler.discard_all()


def _too_large(max_bytes: int) -> str:
    return f"The track is larger than the limit of {max_bytes / (1024 * 1024):g} MiB."


@csrf_protect
def _upload(
    request: HttpRequest, session: PhotoshootSession, handler: StillUploadHandler
) -> HttpResponse:
    try:
        request.POST  # noqa: B018 - parses the body through the handler
    except (MultiPartParserError, TooManyFieldsSent, TooManyFilesSent, RequestDataTooBig):
        return _refused(400, "The upload is not a well-formed multipart form; try again.")
    if handler.too_large:
        return _refused(413, _too_large(handler.max_bytes))
    upload = handler.received
    if upload is None:
        return _refused(400, f"Choose a music file to upload (the “{FILE_FIELD}” field).")
    try:
        track = services.music_track_upload(
            session_id=session.pk,
            upload=upload,
            original_name=upload.file.name or "track",
            uploaded_by=request.user.get_username(),
        )
    except services.MusicRefused as exc:
        return _refused(exc.status, str(exc))
    minutes, seconds = divmod(track.duration_s, 60)
    message = (
        f"“{track.original_name}” uploaded ({int(minutes)}:{seconds:04.1f}, {track.codec}); "
        "finding the beat…"
    )
    return _toast(HttpResponse(_panel(session), status=201), message)


@require_GET
def music_file(request: HttpRequest, session_id: UUID, track_id: UUID) -> HttpResponse:
    """The track's bytes as uploaded, whole or by range (the player seeks with ranges)."""
    session = session_selectors.session_get_for_operator(user=request.user, session_id=session_id)
    track = selectors.music_track_get(session_id=session.pk, track_id=track_id)
    name = track.file.name
    if not name or not default_storage.exists(name):
        raise Http404("The file of this track is missing from the storage.")
    response = ranged_file_response(
        default_storage.open(name, "rb"),
        size=default_storage.size(name),
        content_type=content_type_of(track),
        range_header=request.headers.get("Range", ""),
        filename=track.original_name,
    )
    # A track's file never changes once stored.
    response["Cache-Control"] = "private, max-age=31536000, immutable"
    return response


def _error(status: int, code: str, detail: str) -> JsonResponse:
    return JsonResponse({"error": code, "detail": detail}, status=status)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


@require_POST
def music_cue(request: HttpRequest, session_id: UUID) -> JsonResponse:
    """JSON `{track_id, action: play|pause|seek|ended, position_s, client_time?}` → 201
    `{seq, server_time}`. Errors: `{error, detail}` with 400, 404, 409 or 413."""
    received_at = timezone.now()
    session = session_selectors.session_get_for_operator(user=request.user, session_id=session_id)
    if request.content_type == "multipart/form-data":
        # Not JSON, and the CSRF check has already read the form's stream: refused unread.
        return _error(400, "bad_json", "Send the cue as a JSON object (application/json).")
    if len(request.body) > CUE_MAX_BYTES:
        return _error(
            413, "too_large", f"A cue is a small JSON object of {CUE_MAX_BYTES} bytes at most."
        )
    try:
        body = json.loads(request.body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return _error(400, "bad_json", f"The cue is not valid JSON: {exc}.")
    if not isinstance(body, dict):
        return _error(400, "bad_json", "The cue must be a JSON object.")
    try:
        track_id = UUID(str(body.get("track_id")))
    except ValueError:
        return _error(400, "invalid", "track_id must be the id of the session's track.")
    position = _number(body.get("position_s"))
    if position is None:
        return _error(400, "invalid", "position_s must be a number of seconds into the track.")
    client_time = _number(body.get("client_time")) if body.get("client_time") is not None else None
    try:
        event = services.music_cue_record(
            session_id=session.pk,
            track_id=track_id,
            action=str(body.get("action")),
            position_s=position,
            by=request.user.get_username(),
            received_at=received_at,
            client_time=client_time,
        )
    except services.MusicRefused as exc:
        return _error(exc.status, exc.code, str(exc))
    return JsonResponse(
        {"seq": event.seq, "server_time": received_at.timestamp(), "action": body["action"]},
        status=201,
    )


@require_POST
def music_analysis_retry(request: HttpRequest, session_id: UUID, track_id: UUID) -> HttpResponse:
    session = session_selectors.session_get_for_operator(user=request.user, session_id=session_id)
    track = selectors.music_track_get(session_id=session.pk, track_id=track_id)
    try:
        services.music_analysis_retry(track_id=track.pk)
    except services.MusicRefused as exc:
        return _refused(exc.status, str(exc))
    session.refresh_from_db()
    return _toast(HttpResponse(_panel(session)), "Finding the beat again…")
