"""What the pairing panel shows: the code as text and as a QR code for the capture app."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlencode

import segno
from django.conf import settings
from django.utils.safestring import SafeString, mark_safe

from devices.services import pairing_code_get_or_rotate


@dataclass(frozen=True)
class PairingView:
    code: str
    display: str
    expires_at: datetime
    link: str
    qr_svg: SafeString


def pairing_view(*, base_url: str) -> PairingView:
    code = pairing_code_get_or_rotate()
    server = settings.MOTIONMIX_PUBLIC_URL or base_url
    link = "motionmix://pair?" + urlencode({"server": server, "code": code.code})
    qr = segno.make(link, error="m")
    # segno escapes the payload into the SVG itself; the markup is ours, not the user's.
    svg = qr.svg_inline(scale=4, dark="#0b0f14", light="#ffffff", border=2, omitsize=True)
    return PairingView(
        code=code.code,
        display=code.display,
        expires_at=code.expires_at,
        link=link,
        qr_svg=mark_safe(svg),  # noqa: S308
    )
