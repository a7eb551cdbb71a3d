from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

import pytest
from django.db import connection, transaction
from django.utils import timezone

import ledger
from ledger.catalogue import CATALOGUE, MissingPayloadKeys, UnknownEventType
from ledger.models import ProductionEvent, Sequence
from ledger.services import FLEET_STREAM, LedgerOutsideTransaction

ROTATED = "pairing.rotated"


def _record(**kwargs: Any) -> ProductionEvent:
    kwargs.setdefault("type", ROTATED)
    kwargs.setdefault("payload", {"reason": "operator"})
    with transaction.atomic():
        return ledger.record(**kwargs)


def _seqs(stream: str) -> list[int]:
    return list(
        ProductionEvent.objects.filter(stream=stream).order_by("seq").values_list("seq", flat=True)
    )


# --- Refusals -------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_recording_outside_a_transaction_raises_and_writes_nothing() -> None:
    assert not connection.in_atomic_block

    with pytest.raises(LedgerOutsideTransaction, match=r"transaction\.atomic"):
        ledger.record(type=ROTATED, payload={"reason": "operator"})

    assert ProductionEvent.objects.count() == 0
    assert Sequence.objects.count() == 0


@pytest.mark.django_db
def test_an_unknown_type_raises_and_takes_no_number() -> None:
    with pytest.raises(UnknownEventType, match=r"'device\.exploded'"):
        _record(type="device.exploded", payload={})

    assert ProductionEvent.objects.count() == 0
    assert _record().seq == 1


@pytest.mark.django_db
def test_missing_payload_keys_raise_naming_them() -> None:
    with pytest.raises(MissingPayloadKeys, match="install_id, kind, re_registered"):
        _record(type="device.registered", payload={"name": "Cam 1", "model": "iPhone"})

    assert ProductionEvent.objects.count() == 0


@pytest.mark.django_db
def test_an_empty_payload_for_a_type_that_needs_keys_raises() -> None:
    with pytest.raises(MissingPayloadKeys, match="reason"):
        _record(type=ROTATED, payload={})


@pytest.mark.django_db
def test_a_payload_that_cannot_be_stored_as_json_raises_in_the_caller() -> None:
    with pytest.raises(TypeError):
        _record(payload={"reason": "operator", "extra": {1, 2}})

    assert ProductionEvent.objects.count() == 0


def test_every_catalogued_type_is_described() -> None:
    for name, event_type in CATALOGUE.items():
        assert event_type.name == name
        assert event_type.description
        assert isinstance(event_type.required, frozenset)


# --- Numbering ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_seq_counts_up_from_one_in_each_stream_on_its_own() -> None:
    session = uuid4()
    other_session = uuid4()

    recorded = [
        _record(),
        _record(session_id=session),
        _record(),
        _record(session_id=session),
        _record(session_id=other_session),
        _record(),
    ]

    assert [(e.stream, e.seq) for e in recorded] == [
        (FLEET_STREAM, 1),
        (str(session), 1),
        (FLEET_STREAM, 2),
        (str(session), 2),
        (str(other_session), 1),
        (FLEET_STREAM, 3),
    ]
    assert _seqs(FLEET_STREAM) == [1, 2, 3]
    assert _seqs(str(session)) == [1, 2]
    assert Sequence.objects.get(stream=FLEET_STREAM).last_seq == 3
    assert Sequence.objects.get(stream=str(session)).last_seq == 2


@pytest.mark.django_db
def test_an_event_rolled_back_with_its_change_leaves_no_gap() -> None:
    _record()
    with pytest.raises(RuntimeError), transaction.atomic():
        assert ledger.record(type=ROTATED, payload={"reason": "operator"}).seq == 2
        raise RuntimeError("the service's change failed")

    assert _record().seq == 2
    assert _seqs(FLEET_STREAM) == [1, 2]


@pytest.mark.django_db
def test_an_event_carries_its_ids_stream_and_time() -> None:
    session, device = uuid4(), uuid4()
    at = datetime(2025, 5, 1, 12, 0, tzinfo=UTC)

    event = _record(session_id=session, device_id=device, occurred_at=at)

    event.refresh_from_db()
    assert event.session_id == session
    assert event.device_id == device
    assert event.stream == str(session)
    assert event.occurred_at == at
    assert event.status == ProductionEvent.Status.PENDING
    assert isinstance(event.event_id, UUID)


@pytest.mark.django_db
def test_an_event_without_a_time_is_stamped_now() -> None:
    before = timezone.now()
    event = _record()

    assert before <= event.occurred_at <= timezone.now()


@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_get_gap_free_increasing_numbers_per_stream() -> None:
    if connection.vendor != "postgresql":
        pytest.skip(
            "needs PostgreSQL: SQLite takes one lock for the whole database, so its writers "
            "never interleave; runs in the scaled pass"
        )
    session = uuid4()
    writers, events_each = 8, 12
    start = threading.Barrier(writers)

    def write(writer: int) -> list[tuple[str, int]]:
        try:
            start.wait(timeout=10)
            numbered = []
            for i in range(events_each):
                # Every writer starts both streams at once, so the counters' first rows race too.
                with transaction.atomic():
                    event = ledger.record(
                        type=ROTATED,
                        payload={"reason": f"writer {writer}, event {i}"},
                        session_id=session if (writer + i) % 2 else None,
                    )
                numbered.append((event.stream, event.seq))
            return numbered
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=writers) as pool:
        results = list(pool.map(write, range(writers)))

    total = writers * events_each
    for stream in (FLEET_STREAM, str(session)):
        assert _seqs(stream) == list(range(1, total // 2 + 1))
        assert Sequence.objects.get(stream=stream).last_seq == total // 2
    for numbered in results:
        for stream in (FLEET_STREAM, str(session)):
            mine = [seq for s, seq in numbered if s == stream]
            assert mine == sorted(mine)  # one writer's events are numbered in its order
            assert len(set(mine)) == len(mine)


# --- Payload --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_payload_is_normalised_to_json_before_it_is_stored() -> None:
    last_seen = datetime(2025, 5, 1, 12, 30, 15, 250_000, tzinfo=UTC)
    device = uuid4()

    event = _record(
        type="device.offline",
        payload={
            "reason": "missed_heartbeats",
            "last_seen_at": last_seen,
            "device": device,
            "spent": Decimal("1.50"),
            "window": timedelta(seconds=90),
            "lenses": ("wide", "tele"),
        },
    )

    expected = {
        "reason": "missed_heartbeats",
        "last_seen_at": "2025-05-01T12:30:15.250Z",
        "device": str(device),
        "spent": "1.50",
        "window": "P0DT00H01M30S",
        "lenses": ["wide", "tele"],
    }
    assert event.payload == expected
    event.refresh_from_db()
    assert event.payload == expected
    assert datetime.fromisoformat(event.payload["last_seen_at"]) == last_seen


@pytest.mark.django_db
def test_the_callers_payload_is_not_changed() -> None:
    at = timezone.now()
    payload: dict[str, Any] = {"reason": "missed_heartbeats", "last_seen_at": at}

    _record(type="device.offline", payload=payload)

    assert payload == {"reason": "missed_heartbeats", "last_seen_at": at}
