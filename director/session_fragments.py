"""The session page's live parts, rendered for the page and for its socket: the head (clock,
Ghost mode, hero), the Ghost banner, the Ghost panel (crew moves, metrics, history) and the
event log. Each part is one partial; pages include it, pushes send it out of band."""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

from django.conf import settings
from django.shortcuts import get_object_or_404
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from director import cards, ghost_selectors
from director.event_log import event_log
from director.hero.sdp import ice_servers
from director.models import PhotoshootSession, Still
from director.music import selectors as music_selectors
from director.stills.fragments import strip_fragment
from ledger.selectors import event_latest, ledger_status

PARTS = ("head", "hero", "banner", "panel", "log", "music")
TEMPLATES = {
    "head": "director/partials/session_head.html",
    "hero": "director/partials/hero_area.html",
    "banner": "director/partials/ghost_banner.html",
    "panel": "director/partials/ghost_panel.html",
    "log": "director/partials/event_log.html",
    "music": "director/partials/music_panel.html",
}


def session_get(*, session_id: UUID | str) -> PhotoshootSession:
    """The session, or 404."""
    return get_object_or_404(
        PhotoshootSession.objects.select_related("operator", "hero"), pk=session_id
    )


def _hero(session: PhotoshootSession) -> dict[str, Any]:
    hero = session.hero
    if hero is not None:
        cards.decorate([hero])
    preview = (
        Still.objects.filter(session=session, device=hero).order_by("-captured_at").first()
        if hero is not None
        else None
    )
    on_air = event_latest(stream=str(session.pk), type="hero.on_air")
    return {
        "hero": hero,
        "hero_still": preview,
        # How long the last switch took to reach the picture, if it was this hero's.
        "on_air": on_air.payload if on_air and hero and on_air.device_id == hero.pk else None,
        "whep_url": reverse("director:session_whep", args=[session.pk]),
        # The browser's player needs the same STUN/TURN servers as the relay (hero.js).
        "ice_servers": json.dumps(ice_servers(settings.MOTIONMIX_ICE_SERVERS)),
    }


def part_context(session: PhotoshootSession, part: str) -> dict[str, Any]:
    """What the partial `part` needs, and nothing more."""
    now = timezone.now()
    context: dict[str, Any] = {"session": session, "now": now}
    if part == "head":
        context["elapsed_s"] = session.duration_s or 0.0
        context["modes"] = PhotoshootSession.GhostMode.choices
        context["ledger"] = ledger_status()  # the head carries the ledger chip
    elif part == "hero":
        context.update(_hero(session))
    elif part == "banner":
        context["banner"] = ghost_selectors.banner_get(
            session_id=session.pk,
            autopilot=session.ghost_mode == PhotoshootSession.GhostMode.AUTOPILOT,
            now=now,
        )
        context["veto_reasons"] = ghost_selectors.GhostProposal.VetoReason.choices
    elif part == "panel":
        context["metrics"] = ghost_selectors.ghost_metrics(session_id=session.pk)
        context["history"] = ghost_selectors.history(session_id=session.pk)
        context["crew_moves"] = ghost_selectors.crew_moves(session_id=session.pk)
    elif part == "log":
        context["lines"] = event_log(session_id=session.pk)
    elif part == "music":
        context.update(music_selectors.music_panel_context(session=session))
    return context


def page_context(session: PhotoshootSession) -> dict[str, Any]:
    context: dict[str, Any] = {"session": session}
    for part in PARTS:
        context.update(part_context(session, part))
    return context


def parts(*, session_id: UUID | str, names: set[str], oob: bool = True) -> str:
    """The named parts, out of band, from one fresh read of the session."""
    session = session_get(session_id=session_id)
    html = []
    for part in PARTS:
        if part in names:
            html.append(
                render_to_string(TEMPLATES[part], {**part_context(session, part), "oob": oob})
            )
    if "strip" in names:
        html.append(strip_fragment(oob=oob, session_id=session.pk))
    return "".join(html)


def part(*, session: PhotoshootSession, name: str) -> str:
    """One part, in place (for an htmx answer)."""
    return render_to_string(TEMPLATES[name], part_context(session, name))
