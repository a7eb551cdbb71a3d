"""The rate limit on `POST /api/v1/devices/register`, and the client address it counts by.

Every register call the limit lets through, successful or not, is a `RegisterAttempt` row;
past `MOTIONMIX_REGISTER_MAX_PER_ADDRESS` calls from one address, or
`MOTIONMIX_REGISTER_MAX_PER_INSTALL` for one install id, within `MOTIONMIX_REGISTER_WINDOW_S`,
the call answers 429 with Retry-After. (Wrong pairing codes have their own, tighter limit in
devices/services/fleet.py.) The rows live in the database, so every server process of the
scaled mode counts the same calls, and they are pruned once they leave the window.
"""

from __future__ import annotations

import functools
import ipaddress
import math
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from devices.models import RegisterAttempt

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
UNKNOWN_ADDRESS = "0.0.0.0"  # noqa: S104 - a key for a peer without an address, not a bind


class RegisterRateLimited(Exception):
    """Too many register calls from one address or for one install id (429)."""

    def __init__(self, *, what: str, retry_after_s: int) -> None:
        super().__init__(f"Too many register calls {what}; try again in {retry_after_s} s.")
        self.retry_after_s = retry_after_s


# --- The client address ---------------------------------------------------------------------


def _ip(text: str) -> IPAddress | None:
    try:
        ip = ipaddress.ip_address(text.strip().removeprefix("[").removesuffix("]"))
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


@functools.lru_cache(maxsize=8)
def _networks(proxies: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(proxy, strict=False) for proxy in proxies)


def _trusted(ip: IPAddress) -> bool:
    return any(ip in network for network in _networks(tuple(settings.MOTIONMIX_TRUSTED_PROXIES)))


def client_address(request: HttpRequest) -> str:
    """The address of the client that made `request`.

    The peer's address, unless the peer is one of MOTIONMIX_TRUSTED_PROXIES: then the
    rightmost X-Forwarded-For address that is not itself a trusted proxy (each proxy appends
    the peer it saw, so addresses left of that one are whatever the client claimed). A hop
    that is not an address ends the walk at the last trusted one.
    """
    peer = _ip(request.META.get("REMOTE_ADDR") or "")
    if peer is None:
        return UNKNOWN_ADDRESS
    if not _trusted(peer):
        return str(peer)
    client = peer
    for hop in reversed(request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")):
        ip = _ip(hop)
        if ip is None:
            break
        client = ip
        if not _trusted(ip):
            break
    return str(client)


# --- The limit ------------------------------------------------------------------------------


def _retry_after(times: list[datetime], limit: int, now: datetime, window: timedelta) -> int:
    # The call is let through again once enough of the counted calls leave the window.
    freed_at = times[len(times) - limit] + window
    return max(1, math.ceil((freed_at - now).total_seconds()))


@transaction.atomic
def register_attempt_admit(*, address: str, install_id: str) -> None:
    """Count a register call from `address` for `install_id`, or refuse it.

    Raises `RegisterRateLimited` (and counts nothing) when either limit is reached; otherwise
    records the call, whatever its outcome will be, and drops the rows past the window. Two
    calls at the same instant on PostgreSQL may both be let through at the limit; the limit
    is a brake on floods, not an exact quota.
    """
    now = timezone.now()
    window = timedelta(seconds=settings.MOTIONMIX_REGISTER_WINDOW_S)
    recent = RegisterAttempt.objects.filter(at__gt=now - window).order_by("at")
    for field, value, limit, what in (
        ("address", address, settings.MOTIONMIX_REGISTER_MAX_PER_ADDRESS, "from this address"),
        ("install_id", install_id, settings.MOTIONMIX_REGISTER_MAX_PER_INSTALL, "for this app"),
    ):
        limit = max(1, limit)
        times = list(recent.filter(**{field: value}).values_list("at", flat=True))
        if len(times) >= limit:
            raise RegisterRateLimited(
                what=what, retry_after_s=_retry_after(times, limit, now, window)
            )
    RegisterAttempt.objects.filter(at__lte=now - window).delete()
    RegisterAttempt.objects.create(address=address, install_id=install_id, at=now)
