"""The ledger's push: its sync state changed. Ids and counts only; pages render the chip."""

from __future__ import annotations

import logging
from typing import Literal, TypedDict

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

logger = logging.getLogger(__name__)

LEDGER_GROUP = "ledger"


class LedgerChanged(TypedDict):
    type: Literal["ledger.changed"]


def ledger_changed() -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(LEDGER_GROUP, dict(LedgerChanged(type="ledger.changed")))
    except Exception:
        logger.warning("push of the ledger state failed", exc_info=True)
