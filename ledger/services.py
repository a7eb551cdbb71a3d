from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from uuid import UUID

from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.utils import timezone

from ledger.catalogue import validate
from ledger.models import ProductionEvent, Sequence

FLEET_STREAM = "fleet"


class LedgerOutsideTransaction(RuntimeError):
    pass


def _next_seq(stream: str) -> int:
    # Create the counter if this is the stream's first event, then lock it: the lock is what
    # makes seq gap-free and ordered when two services record into one stream at once.
    Sequence.objects.bulk_create([Sequence(stream=stream)], ignore_conflicts=True)
    counter = Sequence.objects.select_for_update().get(stream=stream)
    counter.last_seq += 1
    counter.save(update_fields=["last_seq"])
    return counter.last_seq


def event_record(
    *,
    type: str,
    payload: dict[str, Any],
    session_id: UUID | None = None,
    device_id: UUID | None = None,
    occurred_at: datetime | None = None,
) -> ProductionEvent:
    """Append one event to the outbox, inside the caller's transaction.

    It must run inside the service's atomic block, so the event exists exactly when the state
    change it describes does. Events of one session share a stream; events outside any session
    (the fleet: registrations, online/offline) share the `fleet` stream.
    """
    if not transaction.get_connection().in_atomic_block:
        raise LedgerOutsideTransaction(
            "ledger.record() must be called inside the service's transaction.atomic block."
        )
    validate(type, payload)
    # Round-trip through JSON now, so a payload that cannot be stored fails in the service.
    clean_payload = json.loads(json.dumps(payload, cls=DjangoJSONEncoder))
    stream = str(session_id) if session_id else FLEET_STREAM
    from ledger.broadcast import ledger_changed
    from ledger.sync import wake

    transaction.on_commit(wake, robust=True)
    transaction.on_commit(ledger_changed, robust=True)
    return ProductionEvent.objects.create(
        session_id=session_id,
        stream=stream,
        seq=_next_seq(stream),
        type=type,
        occurred_at=occurred_at or timezone.now(),
        device_id=device_id,
        payload=clean_payload,
    )
