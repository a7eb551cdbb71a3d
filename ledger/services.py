from __future__ import annotations

import json
from collections.abc import Callable
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
    # makes seq gap-free and ordered when two services record into one stream at once. Every
    # row lock of the services is FOR NO KEY UPDATE (`no_key=True`): a service holding a
    # session's row while it waits here must not block the foreign-key check (FOR KEY SHARE)
    # of the transaction holding this counter, or PostgreSQL ends one of them as a deadlock
    # (tests/director/test_locking.py).
    Sequence.objects.bulk_create([Sequence(stream=stream)], ignore_conflicts=True)
    counter = Sequence.objects.select_for_update(no_key=True).get(stream=stream)
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
    from ledger.broadcast import SessionPush, ledger_changed
    from ledger.sync import wake

    if session_id is not None:
        # The session's pages go first: the operator acts on them (the Ghost banner); the
        # ledger chip and the sync can wait the few milliseconds.
        push = _pending(lambda f: isinstance(f, SessionPush) and f.session_id == session_id)
        if push is None:
            push = SessionPush(session_id)
            transaction.on_commit(push, robust=True)
    _on_commit_once(wake)
    _on_commit_once(ledger_changed)
    event = ProductionEvent.objects.create(
        session_id=session_id,
        stream=stream,
        seq=_next_seq(stream),
        type=type,
        occurred_at=occurred_at or timezone.now(),
        device_id=device_id,
        payload=clean_payload,
    )
    if session_id is not None:
        push.add(type, event.seq)  # type: ignore[union-attr]
    return event


def _pending(match: Callable[[object], bool]) -> object | None:
    """The callback already waiting for this transaction's commit that `match`es, if any.
    (Callbacks of a savepoint that rolls back leave the list with it.)"""
    for _savepoints, func, _robust in transaction.get_connection().run_on_commit:
        if match(func):
            return func
    return None


def _on_commit_once(func: Callable[[], None]) -> None:
    """Run `func` after the commit, once however many events the transaction records."""
    if _pending(lambda f: f is func) is None:
        transaction.on_commit(func, robust=True)
