"""Reads of stills: one still, the strip of recent arrivals, a device's latest."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from uuid import UUID

from django.core.exceptions import ValidationError
from django.db.models import Count, Max, Min, Q
from django.http import Http404
from django.shortcuts import get_object_or_404

from director.models import Still
from director.selectors import sessions_visible_to

if TYPE_CHECKING:
    from director.selectors import Operator

STRIP_LIMIT = 24


def still_get(*, still_id: UUID | str) -> Still:
    """The still, or 404."""
    return get_object_or_404(Still.objects.select_related("device", "session"), pk=still_id)


def still_get_for_operator(*, user: Operator, still_id: UUID | str) -> Still:
    """The still if `user` may see its session (a still taken outside any session is the
    studio's, like the camera that took it), else 404 as for an unknown id."""
    if not user.is_authenticated:
        raise Http404("There is no such still, or it is not yours to see.")
    visible = Q(session__isnull=True) | Q(session__in=sessions_visible_to(user))
    try:
        still = Still.objects.select_related("device", "session").filter(visible, pk=still_id)
        found = still.first()
    except ValidationError:  # not a UUID at all
        found = None
    if found is None:
        raise Http404("There is no such still, or it is not yours to see.")
    return found


def still_batch_siblings(*, still: Still) -> list[Still]:
    """The other stills of the same capture-all, by camera name."""
    if still.batch is None:
        return []
    return list(
        Still.objects.filter(batch=still.batch)
        .exclude(pk=still.pk)
        .select_related("device")
        .order_by("device__name")
    )


@dataclass(frozen=True)
class StripGroup:
    """Stills shown together: one capture-all (a batch), or a still on its own.

    `cameras` and `spread_ms` cover every still of the batch received so far, also those
    pushed out of the strip's window: the spread is max - min of their server-clock times.
    """

    batch: UUID | None
    stills: list[Still]
    cameras: int
    spread_ms: float | None

    @property
    def is_capture_all(self) -> bool:
        return self.batch is not None and self.cameras > 1


def stills_strip(*, limit: int = STRIP_LIMIT, session_id: UUID | None = None) -> list[StripGroup]:
    """The newest stills by arrival, at most `limit`, grouped by batch; newest group first."""
    stills = Still.objects.select_related("device").order_by("-received_at", "-captured_at")
    if session_id is not None:
        stills = stills.filter(session_id=session_id)
    recent = list(stills[:limit])
    batches = {still.batch for still in recent if still.batch is not None}
    figures = {
        row["batch"]: row
        for row in Still.objects.filter(batch__in=batches)
        .values("batch")
        .annotate(cameras=Count("device", distinct=True), first=Min("captured_at"))
        .annotate(last=Max("captured_at"))
    }
    groups: list[StripGroup] = []
    by_batch: dict[UUID, list[Still]] = {}
    for still in recent:
        if still.batch is None:
            groups.append(StripGroup(batch=None, stills=[still], cameras=1, spread_ms=None))
            continue
        members = by_batch.get(still.batch)
        if members is not None:
            members.append(still)
            continue
        by_batch[still.batch] = members = [still]
        row = figures[still.batch]
        spread_ms = (row["last"] - row["first"]).total_seconds() * 1000
        groups.append(
            StripGroup(
                batch=still.batch, stills=members, cameras=row["cameras"], spread_ms=spread_ms
            )
        )
    for group in groups:
        # Inside a capture-all, cameras in name order read better than arrival order.
        group.stills.sort(key=lambda s: s.device.name)
    return groups
