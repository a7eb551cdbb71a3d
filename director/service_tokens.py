"""Service tokens: how another AI service authenticates to post Ghost proposals.

The plain token is handed out once, when it is created; the database keeps its sha256 and a
short prefix to tell tokens apart. A revoked token stays (proposals name it) but opens nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta
from typing import TYPE_CHECKING
from uuid import UUID

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from director.models import ServiceToken

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

TOKEN_PREFIX = "mmx_svc_"  # noqa: S105 - a label on every service token, not a secret
VISIBLE_SECRET_CHARS = 6
LAST_USED_RESOLUTION = timedelta(minutes=1)


class ServiceTokenRevoked(Exception):
    """The token is known but revoked (403): the service needs a new one from an admin."""

    def __init__(self, token: ServiceToken) -> None:
        self.token = token
        when = f" at {token.revoked_at:%Y-%m-%d %H:%M} UTC" if token.revoked_at else ""
        super().__init__(
            f"The service token “{token.name}” ({token.prefix}…) was revoked{when}; "
            "ask an admin for a new one."
        )


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


@transaction.atomic
def service_token_create(
    *, name: str, created_by: AbstractBaseUser | None
) -> tuple[ServiceToken, str]:
    """Create a token for the service `name`; returns the row and the plain token, which is
    not stored and cannot be shown again. Raises `ValidationError` for a bad or taken name."""
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ServiceToken(
        name=name.strip(),
        prefix=raw[: len(TOKEN_PREFIX) + VISIBLE_SECRET_CHARS],
        token_hash=hash_token(raw),
        created_by=created_by,
    )
    token.full_clean()
    token.save()
    return token, raw


@transaction.atomic
def service_token_revoke(*, token_id: UUID) -> ServiceToken:
    """Revoke a token from now on. Idempotent: revoking it again keeps the first time."""
    token = ServiceToken.objects.select_for_update(no_key=True).get(pk=token_id)
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
    return token


def service_token_authenticate(raw: str) -> ServiceToken | None:
    """The active token whose plain text is `raw`, or None when no token matches.

    Raises `ServiceTokenRevoked` for a revoked one, so the caller can answer 403 rather than 401.
    The lookup is by the sha256 of `raw`, so its timing says nothing about the stored secrets.
    `last_used_at` is written at most once a minute per token, by one conditional UPDATE, so a
    busy service does not write on every call.
    """
    if not raw or not raw.startswith(TOKEN_PREFIX):
        return None
    digest = hash_token(raw)
    token = ServiceToken.objects.filter(token_hash=digest).first()
    if token is None or not hmac.compare_digest(token.token_hash, digest):
        return None
    if token.revoked_at is not None:
        raise ServiceTokenRevoked(token)
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
        stale = Q(last_used_at__isnull=True) | Q(last_used_at__lte=now - LAST_USED_RESOLUTION)
        ServiceToken.objects.filter(stale, pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return token
