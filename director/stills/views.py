"""Operator views of stills: the full-size page, and the files behind it (login required, as
every operator page is; the storage may be private S3, so files go through Django).

The page, the original and the full-size preview are the session's: only who may see the
session gets them (404 otherwise). The thumbnail is the studio's, like the live preview of the
camera's card: the registry's device cards and stills strip show every camera to every
operator, so it is served to any logged-in operator."""

from __future__ import annotations

import posixpath

from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from director.models import Still
from director.stills import images, selectors

# A still's files never change once stored: browsers may keep them as long as they like.
IMMUTABLE = "private, max-age=31536000, immutable"


def _stream(still: Still, name: str, content_type: str, filename: str) -> FileResponse:
    if not name or not default_storage.exists(name):
        raise Http404("The file of this still is missing from the storage.")
    response = FileResponse(
        default_storage.open(name, "rb"), content_type=content_type, filename=filename
    )
    response["Cache-Control"] = IMMUTABLE
    return response


def _download_name(still: Still) -> str:
    return posixpath.basename(still.file.name)


@require_GET
def still_detail(request: HttpRequest, still_id: str) -> HttpResponse:
    still = selectors.still_get_for_operator(user=request.user, still_id=still_id)
    siblings = selectors.still_batch_siblings(still=still)
    return render(request, "director/still_detail.html", {"still": still, "siblings": siblings})


@require_GET
def still_original(request: HttpRequest, still_id: str) -> FileResponse:
    """The bytes exactly as the camera uploaded them."""
    still = selectors.still_get_for_operator(user=request.user, still_id=still_id)
    return _stream(still, still.file.name, still.content_type, _download_name(still))


@require_GET
def still_thumbnail(request: HttpRequest, still_id: str) -> FileResponse:
    still = selectors.still_get(still_id=still_id)
    stem = posixpath.splitext(_download_name(still))[0]
    return _stream(still, still.thumbnail.name, "image/jpeg", f"{stem}-thumb.jpg")


@require_GET
def still_preview(request: HttpRequest, still_id: str) -> HttpResponse:
    """What the full-size page shows. A JPEG is shown as uploaded. Browsers other than Safari
    cannot show HEIC, so a HEIC is rendered to a large JPEG on each request: the page is
    opened now and then, and no second file has to be kept in step with the original."""
    still = selectors.still_get_for_operator(user=request.user, still_id=still_id)
    if still.content_type == images.JPEG.content_type:
        return _stream(still, still.file.name, still.content_type, _download_name(still))
    if not default_storage.exists(still.file.name):
        raise Http404("The file of this still is missing from the storage.")
    with default_storage.open(still.file.name, "rb") as original:
        data = images.preview(original, images.HEIC)
    response = HttpResponse(data, content_type="image/jpeg")
    response["Cache-Control"] = IMMUTABLE
    return response
