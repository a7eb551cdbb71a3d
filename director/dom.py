"""DOM ids, built in one place so that full pages and pushed fragments agree."""

from __future__ import annotations

from uuid import UUID

DEVICE_CARDS = "device-cards"
REGISTRY_SUMMARY = "registry-summary"
PAIRING_PANEL = "pairing-panel"
LEDGER_CHIP = "ledger-chip"
COVERAGE_MAP = "coverage-map"
STILLS_STRIP = "stills-strip"


def device_card_id(device_id: UUID | str) -> str:
    return f"device-{device_id}-card"


def device_live_id(device_id: UUID | str) -> str:
    """The live preview on a card: replaced by the relay's pushes, kept by card renders."""
    return f"device-{device_id}-live"


def coverage_camera_id(device_id: UUID | str) -> str:
    # Stable across re-renders, so htmx can hand keyboard focus back to the same marker.
    return f"coverage-{device_id}-camera"


SESSION_HEAD = "session-head"
GHOST_BANNER = "ghost-banner"
GHOST_PANEL = "ghost-panel"
HERO_AREA = "hero-area"
HERO_META = "hero-meta"
EVENT_LOG = "event-log"
MUSIC_PANEL = "music-panel"
