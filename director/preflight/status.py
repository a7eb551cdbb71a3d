"""`GET /preflight/status.json`, staff only: what this server process itself runs, for
preflight checks made from another process (the relay lives in the server's event loop, and
the embedded default's local Convex bridge, its URL and its admin key, are known only to the
server). A Convex deployment's key is never in it: see `director.bridge.local_bridge_key`."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from director.bridge import local_bridge_key
from director.hero.runtime import relay_status


def _relay() -> dict[str, object]:
    # This process's relay, or (a web process of the scaled profile) the relay process's.
    return relay_status()


@require_GET
@never_cache  # it may hold the local bridge's key: no cache may keep a copy
def preflight_status(request: HttpRequest) -> JsonResponse:
    if not request.user.is_staff:
        return JsonResponse(
            {"error": "forbidden", "detail": "The server's status is for staff."}, status=403
        )
    return JsonResponse(
        {
            "mode": "scaled" if settings.REDIS_URL else "embedded",
            "production": bool(getattr(settings, "PRODUCTION", False)),
            "embedded_ticker": settings.MOTIONMIX_EMBEDDED_TICKER,
            "convex_url": settings.CONVEX_URL,
            "convex_bridge_key": local_bridge_key(),
            "ice_host_addresses": list(settings.MOTIONMIX_ICE_HOST_ADDRESSES),
            "relay": _relay(),
        }
    )
