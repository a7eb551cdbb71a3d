"""The production ledger. Apps above call `ledger.record(...)` inside their service transaction."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ledger.models import ProductionEvent


def record(**kwargs: Any) -> ProductionEvent:
    # Imported on call: this package is imported while Django is still loading its apps.
    from ledger.services import event_record

    return event_record(**kwargs)
