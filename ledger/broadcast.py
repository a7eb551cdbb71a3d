"""The ledger's push: its sync state changed. Ids and counts only; pages render the chip."""

from __future__ import annotations

import time
from typing import Literal, TypedDict
from uuid import UUID

from channels.layers import get_channel_layer

from ledger.pushes import send_soon

LEDGER_GROUP = "ledger"


class LedgerChanged(TypedDict):
    type: Literal["ledger.changed"]
    sent_at: float  # server clock (unix s) after the change


class SessionEvents(TypedDict):
    """Events of a session's stream were committed (one transaction's, in seq order): its
    pages update the banner, the history, the hero area and the event log from them."""

    type: Literal["session.events"]
    event_types: list[str]
    last_seq: int
    # Server clock (unix s) right after the commit: a part rendered from a query that began
    # later already shows these events.
    committed_at: float


def session_group(session_id: UUID | str) -> str:
    return f"session-{session_id}"


def ledger_changed() -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    send_soon(
        layer.group_send(
            LEDGER_GROUP, dict(LedgerChanged(type="ledger.changed", sent_at=time.time()))
        ),
        what="push of the ledger state",
    )


class SessionPush:
    """The on-commit push of one transaction's events of one session: every event recorded in
    the transaction joins the one message, so a service that records five events sends one."""

    def __init__(self, session_id: UUID) -> None:
        self.session_id = session_id
        self.event_types: list[str] = []
        self.last_seq = 0

    def add(self, event_type: str, seq: int) -> None:
        self.event_types.append(event_type)
        self.last_seq = max(self.last_seq, seq)

    def __call__(self) -> None:
        layer = get_channel_layer()
        if layer is None:
            return
        message = SessionEvents(
            type="session.events",
            event_types=self.event_types,
            last_seq=self.last_seq,
            committed_at=time.time(),
        )
        send_soon(
            layer.group_send(session_group(self.session_id), dict(message)),
            what=f"push of {len(self.event_types)} event(s) to session {self.session_id}",
        )
