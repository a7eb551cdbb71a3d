"""WHIP ingest (RFC 9725) in Device API v1: `POST /api/v1/whip`, `DELETE /api/v1/whip/{id}`.

A camera posts its SDP offer with its device token and gets the relay's answer (201, with the
publish's `Location`). The relay gathers its candidates before answering, so there is no trickle
ICE: PATCH on the publish answers 405. Errors use the device API's JSON body.
"""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from django.http import HttpRequest, HttpResponse
from ninja import Router

from devices.api import ERRORS, device_auth, error_response
from devices.models import Device
from director.hero import records
from director.hero.relay import RelayRefused
from director.hero.runtime import hero_relay
from director.hero.sdp import SDP_TYPE, BadOffer, OfferTooLarge, offer_body, offer_text

router = Router(tags=["video"])

SDP_BODY: dict[str, Any] = {
    "required": True,
    "content": {SDP_TYPE: {"schema": {"type": "string", "description": "The SDP offer."}}},
}


def _device(request: HttpRequest) -> Device:
    device = request.auth  # type: ignore[attr-defined]
    assert isinstance(device, Device)
    return device


def _sdp_response(answer: str, *, location: str) -> HttpResponse:
    response = HttpResponse(answer, status=201, content_type=SDP_TYPE)
    response["Location"] = location
    response["Cache-Control"] = "no-store"
    return response


@router.post(
    "/whip",
    auth=device_auth,
    response={201: None, **ERRORS, 503: None},
    summary="Publish video to the hero relay (WHIP)",
    description="Body: the SDP offer (application/sdp, sendonly video; VP8 or H.264). Answers "
    "201 with the SDP answer and `Location`; `DELETE` on the Location ends the publish. A "
    "second publish from the same device replaces the first.",
    openapi_extra={"requestBody": SDP_BODY},
)
async def whip_publish(request: HttpRequest) -> HttpResponse:
    device = _device(request)
    try:
        body = offer_body(request)
    except OfferTooLarge as exc:
        return error_response(413, "too_large", str(exc))
    if body.strip() and request.content_type != SDP_TYPE:
        return error_response(
            415,
            "unsupported_media_type",
            f"Send the offer as {SDP_TYPE}, not {request.content_type or 'nothing'}.",
        )
    try:
        offer = offer_text(body, want="send")
        session_id = await database_sync_to_async(records.live_session_of)(device_id=str(device.pk))
        publisher, answer = await hero_relay().publish(
            device_id=str(device.pk), offer=offer, session_id=session_id
        )
    except BadOffer as exc:
        return error_response(400, "bad_sdp", str(exc))
    except RelayRefused as exc:
        return error_response(exc.status, "unavailable", str(exc))
    return _sdp_response(answer, location=f"{request.path.rstrip('/')}/{publisher.publish_id}")


@router.delete(
    "/whip/{publish_id}",
    auth=device_auth,
    response={200: None, **ERRORS},
    summary="End a WHIP publish",
)
async def whip_unpublish(request: HttpRequest, publish_id: str) -> HttpResponse:
    device = _device(request)
    relay = hero_relay()
    publisher = relay.publisher_by_id(publish_id)
    if publisher is None or publisher.device_id != str(device.pk):
        return error_response(404, "not_found", "No such publish from this device; it has ended.")
    await relay.unpublish(publisher, reason="unpublished")
    return HttpResponse(status=200)


@router.patch("/whip/{publish_id}", auth=device_auth, response={405: None}, include_in_schema=False)
async def whip_patch(request: HttpRequest, publish_id: str) -> HttpResponse:
    response = error_response(
        405,
        "method_not_allowed",
        "This relay gathers every candidate before it answers: no trickle ICE or ICE restart; "
        "publish again instead.",
    )
    response["Allow"] = "DELETE"
    return response
