"""The stills strip as a fragment: the partial the registry page includes, for the socket."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.template.loader import render_to_string

from director.stills import selectors

STRIP_TEMPLATE = "director/partials/stills_strip.html"


def strip_context(*, oob: bool, session_id: UUID | None = None) -> dict[str, Any]:
    """The strip of every recent still, or of one session's."""
    return {"groups": selectors.stills_strip(session_id=session_id), "oob": oob}


def strip_fragment(*, oob: bool, session_id: UUID | None = None) -> str:
    return render_to_string(STRIP_TEMPLATE, strip_context(oob=oob, session_id=session_id))
