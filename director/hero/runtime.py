"""The hero feed: WHIP ingest, WHEP playback and the relay between them (see relay.py).

There is one relay per process, on the process's event loop: the Daphne server's in the
embedded default. `hero_relay()` makes it on first use and starts its housekeeping;
`hero_relay_close()` closes every peer (the server calls it on shutdown).

In the scaled profile only the process in the relay role holds one (`serves_relay()`); web
processes forward WHIP and WHEP to it (director/scaled/forward.py), hero switches reach it
through the channel layer (broadcast.py) and its card previews leave it the same way, and
everything it records goes through the services into the shared database. So no web process
needs the relay object itself, and `hero_relay()` there refuses with the reason.
"""

from __future__ import annotations

import asyncio

import httpx
from django.conf import settings
from django.utils.crypto import salted_hmac

from devices.ice import ice_host_addresses_apply
from director.hero.relay import HeroRelay, RelayRefused, RelaySettings
from director.hero.sdp import rtc_configuration

_relay: HeroRelay | None = None


def relay_settings() -> RelaySettings:
    return RelaySettings(
        configuration=rtc_configuration(settings.MOTIONMIX_ICE_SERVERS),
        no_media_s=settings.MOTIONMIX_HERO_NO_MEDIA_S,
        connect_s=settings.MOTIONMIX_HERO_CONNECT_S,
        preview_s=settings.MOTIONMIX_HERO_PREVIEW_S,
        preview_width=settings.MOTIONMIX_HERO_PREVIEW_WIDTH,
        max_viewers=settings.MOTIONMIX_HERO_MAX_VIEWERS,
        max_publishers=settings.MOTIONMIX_HERO_MAX_PUBLISHERS,
        viewer_codec=settings.MOTIONMIX_HERO_VIEWER_CODEC,
    )


def serves_relay() -> bool:
    """Whether this process holds the hero relay (roles "all" and "relay"; not "web")."""
    return settings.MOTIONMIX_ROLE != "web"


def hero_relay() -> HeroRelay:
    """This process's relay, made and started on first use (inside the running loop)."""
    global _relay
    if not serves_relay():
        raise RelayRefused(
            "This web process holds no hero relay; WHIP and WHEP are forwarded to "
            f"{settings.MOTIONMIX_HERO_RELAY_URL or 'MOTIONMIX_HERO_RELAY_URL'}.",
            status=503,
        )
    loop = asyncio.get_running_loop()
    if _relay is None or _relay.closed or _relay.loop is not loop:
        if settings.MOTIONMIX_ICE_HOST_ADDRESSES:
            ice_host_addresses_apply(settings.MOTIONMIX_ICE_HOST_ADDRESSES)
        _relay = HeroRelay(relay_settings())
        _relay.start()
    return _relay


def hero_relay_current() -> HeroRelay | None:
    return _relay


async def hero_relay_close() -> None:
    global _relay
    relay, _relay = _relay, None
    if relay is not None and relay.loop is asyncio.get_running_loop():
        await relay.close()


# -- the relay's status, from any process ------------------------------------------------------

RELAY_STATUS_PATH = "/_relay/status"
RELAY_KEY_HEADER = "X-MotionMix-Relay-Key"
RELAY_STATUS_TIMEOUT_S = 3.0


def relay_status_key() -> str:
    """What a web process shows the relay process to read its status: both hold the secret."""
    return salted_hmac("director.hero.runtime.relay-status", "status").hexdigest()


def relay_status_local() -> dict[str, object]:
    """This process's relay, as a status report (call it on the relay's loop or a thread)."""
    relay = _relay
    if relay is None:
        return {"running": False, "detail": "no relay in this server process"}
    if relay.closed:
        return {"running": False, "detail": "the relay is closed (the server is stopping)"}
    return {"running": True, "publishers": len(relay.publishers), "viewers": len(relay.viewers)}


def relay_status() -> dict[str, object]:
    """The hero relay's status, whichever process holds it: this one's own, or (in the web
    role) the relay process's, read over HTTP. Blocking: call it from a thread, not the loop."""
    if serves_relay():
        return relay_status_local()
    base = settings.MOTIONMIX_HERO_RELAY_URL
    try:
        response = httpx.get(
            base + RELAY_STATUS_PATH,
            headers={RELAY_KEY_HEADER: relay_status_key()},
            timeout=RELAY_STATUS_TIMEOUT_S,
        )
    except httpx.HTTPError as exc:
        return {"running": False, "detail": f"the relay at {base} does not answer: {exc}"}
    if response.status_code == 404:
        # An external WHIP/WHEP SFU answers HTTP but keeps no status of ours.
        return {"running": True, "detail": f"an external relay at {base}", "url": base}
    if response.status_code != 200:
        return {"running": False, "detail": f"the relay at {base} answered {response.status_code}"}
    return {**response.json(), "url": base}
