"""WHEP playback of a session's hero for logged-in operators: `POST .../whep` with the
browser's SDP offer answers 201 with the relay's answer; `DELETE` on its Location ends it.

Not behind the login redirect: a player needs a 401 it can show, not a login page."""

from __future__ import annotations

from uuid import UUID

from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from director.hero.relay import RelayRefused
from director.hero.runtime import hero_relay
from director.hero.sdp import SDP_TYPE, BadOffer, OfferTooLarge, offer_body, offer_text


def _error(status: int, code: str, detail: str) -> JsonResponse:
    return JsonResponse({"error": code, "detail": detail}, status=status)


async def _operator(request: HttpRequest) -> str | None:
    user = await request.auser()
    return user.get_username() if user.is_authenticated else None


@login_not_required
@require_POST
async def session_whep(request: HttpRequest, session_id: UUID) -> HttpResponse:
    user = await _operator(request)
    if user is None:
        return _error(401, "unauthorized", "Log in as an operator to watch the hero.")
    try:
        body = offer_body(request)
    except OfferTooLarge as exc:
        return _error(413, "too_large", str(exc))
    if body.strip() and request.content_type != SDP_TYPE:
        return _error(415, "unsupported_media_type", f"Send the offer as {SDP_TYPE}.")
    try:
        offer = offer_text(body, want="recv")
        viewer, answer = await hero_relay().watch(
            session_id=str(session_id), offer=offer, user=user
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
    if await _operator(request) is None:
        return _error(401, "unauthorized", "Log in as an operator.")
    relay = hero_relay()
    viewer = relay.viewers.get(viewer_id)
    if viewer is None or viewer.session_id != str(session_id):
        return _error(404, "not_found", "No such hero view; it has ended.")
    await relay.unwatch(viewer)
    return HttpResponse(status=200)
