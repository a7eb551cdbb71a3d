"""DOM ids, built in one place so that full pages and pushed fragments agree."""

from __future__ import annotations

from uuid import UUID

DEVICE_CARDS = "device-cards"
REGISTRY_SUMMARY = "registry-summary"
PAIRING_PANEL = "pairing-panel"
LEDGER_CHIP = "ledger-chip"


def device_card_id(device_id: UUID | str) -> str:
    return f"device-{device_id}-card"
