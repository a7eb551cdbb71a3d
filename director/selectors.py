from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from uuid import UUID

from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import Http404

from devices.models import Device
from devices.selectors import device_list
from director import cards
from director.models import PhotoshootSession

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

    Operator = AbstractBaseUser | AnonymousUser


def sessions_visible_to(user: Operator) -> QuerySet[PhotoshootSession]:
    """Who sees which session: an operator sees the sessions they own, staff see every one,
    and nobody else sees any. Every read of a session for a person goes through here; the
    stills, music, exports, hero views and the socket of a session follow the same rule."""
    sessions = PhotoshootSession.objects.all()
    if not user.is_authenticated:
        return sessions.none()
    if user.is_staff:
        return sessions
    return sessions.filter(operator_id=user.pk)


def session_list(*, user: Operator) -> QuerySet[PhotoshootSession]:
    return sessions_visible_to(user).select_related("operator").order_by("-created_at")


def session_get_for_operator(*, user: Operator, session_id: UUID | str) -> PhotoshootSession:
    """The session if `user` may see it, else 404: the same answer as for an id that does not
    exist, so ids of other operators' sessions cannot be told from made-up ones."""
    try:
        session = (
            sessions_visible_to(user).select_related("operator", "hero").filter(pk=session_id)
        ).first()
    except ValidationError:  # not a UUID at all
        session = None
    if session is None:
        raise Http404("There is no such session, or it is not yours to see.")
    return session


def session_visible(*, user: Operator, session_id: UUID | str) -> bool:
    try:
        return sessions_visible_to(user).filter(pk=session_id).exists()
    except ValidationError:
        return False


@dataclass(frozen=True)
class RegistrySummary:
    total: int
    online: int
    warnings: int


def registry_summary(devices: list[Device]) -> RegistrySummary:
    return RegistrySummary(
        total=len(devices),
        online=sum(d.is_online for d in devices),
        warnings=sum(d.is_online and (d.battery_low or d.thermal_warning) for d in devices),
    )


def registry_devices() -> list[Device]:
    return cards.decorate(device_list())


def card_devices(device_ids: Iterable[object]) -> list[Device]:
    return cards.decorate(Device.objects.filter(pk__in=list(device_ids)))


def live_session_for_device(device_id: UUID) -> PhotoshootSession | None:
    return PhotoshootSession.objects.filter(
        status=PhotoshootSession.Status.LIVE, devices=device_id
    ).first()


def session_on_air(session_id: UUID | str) -> tuple[str, str | None]:
    """A session's status and its hero's device id, or ("missing", None)."""
    row = PhotoshootSession.objects.filter(pk=session_id).values_list("status", "hero_id").first()
    if row is None:
        return "missing", None
    status, hero_id = row
    return status, str(hero_id) if hero_id else None


def capture_targets() -> tuple[list[UUID], PhotoshootSession | None]:
    """Who "Capture all" fires: the live session's online cameras, or, with no session live,
    every online camera that is not a webcam."""
    session = (
        PhotoshootSession.objects.filter(status=PhotoshootSession.Status.LIVE)
        .order_by("-started_at")
        .first()
    )
    devices = Device.objects.filter(status=Device.Status.ONLINE).exclude(kind=Device.Kind.WEBCAM)
    if session is not None:
        devices = devices.filter(photoshoot_sessions=session)
    return list(devices.order_by("name").values_list("pk", flat=True)), session
