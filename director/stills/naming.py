"""Where a still goes inside the storage: `MOTIONMIX_STILL_NAME_TEMPLATE`, filled in."""

from __future__ import annotations

import posixpath
import string
from datetime import datetime
from uuid import UUID

from django.core.exceptions import ImproperlyConfigured
from django.utils.text import slugify

PLACEHOLDERS = ("session", "device", "seq", "lens", "ext", "date", "batch")
UNSORTED = "unsorted"
SINGLE = "single"
THUMBS_PREFIX = "thumbs"
DEVICE_SLUG_MAX = 40


def device_folder(*, name: str, device_id: UUID | str) -> str:
    """A filesystem-safe device name plus a short id: two cameras may share a name."""
    slug = slugify(name)[:DEVICE_SLUG_MAX].strip("-_") or "camera"
    return f"{slug}-{str(device_id)[:8]}"


def check_template(template: str) -> None:
    """Refuse a template that names an unknown placeholder, before any still depends on it."""
    try:
        fields = [field for _, field, _, _ in string.Formatter().parse(template) if field]
    except ValueError as exc:
        raise ImproperlyConfigured(
            f"MOTIONMIX_STILL_NAME_TEMPLATE {template!r} is not a valid format string: {exc}."
        ) from None
    unknown = sorted({f.split(".")[0].split("[")[0] for f in fields} - set(PLACEHOLDERS))
    if unknown:
        raise ImproperlyConfigured(
            f"MOTIONMIX_STILL_NAME_TEMPLATE uses {', '.join('{' + u + '}' for u in unknown)}; "
            f"the placeholders are {', '.join('{' + p + '}' for p in PLACEHOLDERS)}."
        )


def still_name(
    template: str,
    *,
    session_id: UUID | None,
    device_name: str,
    device_id: UUID,
    seq: int,
    lens: str,
    ext: str,
    captured_at: datetime,
    batch: UUID | None,
) -> str:
    """The storage name of a still. Every part that comes from a device is slugified, so a
    lens id such as "../x" cannot leave the stills' folder."""
    check_template(template)
    try:
        name = template.format(
            session=str(session_id) if session_id else UNSORTED,
            device=device_folder(name=device_name, device_id=device_id),
            seq=seq,
            lens=slugify(lens) or "lens",
            ext=ext,
            date=captured_at.strftime("%Y-%m-%d"),
            batch=str(batch) if batch else SINGLE,
        )
    except (ValueError, TypeError) as exc:
        # A format spec that does not fit its value, such as {lens:04d}.
        raise ImproperlyConfigured(
            f"MOTIONMIX_STILL_NAME_TEMPLATE {template!r} cannot be filled in: {exc}."
        ) from None
    clean = posixpath.normpath(name.replace("\\", "/")).lstrip("/")
    if clean in ("", ".") or clean.startswith("..") or "/../" in f"/{clean}/":
        raise ImproperlyConfigured(
            f"MOTIONMIX_STILL_NAME_TEMPLATE {template!r} gives {name!r}, which is outside the "
            "media storage."
        )
    return clean


def thumbnail_name(name: str) -> str:
    """The thumbnail's storage name: the still's, under `thumbs/`, as a JPEG."""
    return f"{THUMBS_PREFIX}/{posixpath.splitext(name)[0]}.jpg"
