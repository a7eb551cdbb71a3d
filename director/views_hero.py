"""WHEP playback of a session's hero for logged-in operators: `POST .../whep` with the
browser's SDP offer answers 201 with the relay's answer; `DELETE` on its Location ends it.

Not behind the login redirect: a player needs a 401 it can show, not a login page. A session
the operator may not see answers 404, as an unknown one does (director/selectors.py), and a
view may be ended only by the operator who started it."""

from __future__ import annotations

from uuid import UUID

from asgiref.sync import sync_to_async
from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from director import selectors
from director.hero.relay import RelayRefused
from director.hero.runtime import hero_relay
from director.hero.sdp import SDP_TYPE, BadOffer, OfferTooLarge, offer_body, offer_text


def _error(status: int, code: str, detail: str) -> JsonResponse:
    return JsonResponse({"error": code, "detail": detail}, status=status)


UNAUTHORIZED = "Log in as an operator to watch the hero."
NO_SESSION = "There is no such session, or it is not yours to see."


@login_not_required
@require_POST
async def session_whep(request: HttpRequest, session_id: UUID) -> HttpResponse:
    user = await request.auser()
    if not user.is_authenticated:
        return _error(401, "unauthorized", UNAUTHORIZED)
    if not await sync_to_async(selectors.session_visible)(user=user, session_id=session_id):
        return _error(404, "not_found", NO_SESSION)
    declared = request.META.get("CONTENT_LENGTH") or "0"
    if request.content_type != SDP_TYPE and declared != "0":
        # Refused before reading: the CSRF check has already read a form body's stream.
        return _error(415, "unsupported_media_type", f"Send the offer as {SDP_TYPE}.")
    try:
        body = offer_body(request)
    except OfferTooLarge as exc:
        return _error(413, "too_large", str(exc))
    if body.strip() and request.content_type != SDP_TYPE:
        return _error(415, "unsupported_media_type", f"Send the offer as {SDP_TYPE}.")
    try:
        offer = offer_text(body, want="recv")
        viewer, answer = await hero_relay().watch(
            session_id=str(session_id), offer=offer, user=user.get_username(), owner_id=user.pk
        )
    except BadOffer as exc:
        return _error(400, "bad_sdp", str(exc))
    except RelayRefused as exc:
        return _error(exc.status, "unavailable", str(exc))
    response = HttpResponse(answer, status=201, content_type=SDP_TYPE)
    response["Location"] = reverse("director:session_whep_end", args=[session_id, viewer.viewer_id])
    response["Cache-Control"] = "no-store"
    return response


@login_not_required
@require_http_methods(["DELETE"])
async def session_whep_end(request: HttpRequest, session_id: UUID, viewer_id: str) -> HttpResponse:
    user = await request.auser()
    if not user.is_authenticated:
        return _error(401, "unauthorized", UNAUTHORIZED)
    relay = hero_relay()
    viewer = relay.viewers.get(viewer_id)
    # Another operator's view is answered as unknown: its id tells nothing, and it goes on.
    if viewer is None or viewer.session_id != str(session_id) or viewer.owner_id != user.pk:
        return _error(404, "not_found", "No such hero view of yours; it has ended.")
    await relay.unwatch(viewer)
    return HttpResponse(status=200)
