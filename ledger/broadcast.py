"""The ledger's push: its sync state changed. Ids and counts only; pages render the chip."""

from __future__ import annotations

from typing import Literal, TypedDict

from channels.layers import get_channel_layer

from ledger.pushes import send_soon

LEDGER_GROUP = "ledger"


class LedgerChanged(TypedDict):
    type: Literal["ledger.changed"]


def ledger_changed() -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    send_soon(
        layer.group_send(LEDGER_GROUP, dict(LedgerChanged(type="ledger.changed"))),
        what="push of the ledger state",
    )
