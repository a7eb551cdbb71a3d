"""The hero feed: WHIP ingest, WHEP playback and the relay between them (see relay.py).

There is one relay per process, on the process's event loop: the Daphne server's in the
embedded default. `hero_relay()` makes it on first use and starts its housekeeping;
`hero_relay_close()` closes every peer (the server calls it on shutdown).
"""

from __future__ import annotations

import asyncio

from django.conf import settings

from devices.ice import ice_host_addresses_apply
from director.hero.relay import HeroRelay, RelaySettings
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


def hero_relay() -> HeroRelay:
    """This process's relay, made and started on first use (inside the running loop)."""
    global _relay
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
