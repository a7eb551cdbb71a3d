"""The stills strip as a fragment: the partial the registry page includes, for the socket."""

from __future__ import annotations

from typing import Any

from django.template.loader import render_to_string

from director.stills import selectors

STRIP_TEMPLATE = "director/partials/stills_strip.html"


def strip_context(*, oob: bool) -> dict[str, Any]:
    return {"groups": selectors.stills_strip(), "oob": oob}


def strip_fragment(*, oob: bool) -> str:
    return render_to_string(STRIP_TEMPLATE, strip_context(oob=oob))
