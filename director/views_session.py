"""The Live Director page of one session, and Ghost's supervision actions. Thin: parse,
select, call one service, render; a refusal is a toast."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET, require_POST

from director import ghost, selectors, services, session_fragments
from director.coverage_map import build_coverage_map
from director.forms import GhostModeForm, VetoForm
from director.models import GhostProposal
from director.pairing import pairing_view
from director.views import _base_url, _refused, _toast
from ledger.selectors import ledger_status


@require_GET
def session_live(request: HttpRequest, session_id: str) -> HttpResponse:
    session = selectors.session_get_for_operator(user=request.user, session_id=session_id)
    devices = selectors.registry_devices()
    context = {
        **session_fragments.page_context(session),
        "devices": devices,
        "coverage": build_coverage_map(devices),
        "summary": selectors.registry_summary(devices),
        "pairing": pairing_view(base_url=_base_url(request)),
        "ledger": ledger_status(),
    }
    return render(request, "director/session_live.html", context)


@require_GET
def session_banner(request: HttpRequest, session_id: str) -> HttpResponse:
    session = selectors.session_get_for_operator(user=request.user, session_id=session_id)
    return HttpResponse(session_fragments.part(session=session, name="banner"))


@require_POST
def session_ghost_mode(request: HttpRequest, session_id: str) -> HttpResponse:
    session = selectors.session_get_for_operator(user=request.user, session_id=session_id)
    form = GhostModeForm(request.POST)
    if not form.is_valid():
        return _toast(HttpResponse(status=400), form.error_text(), "error")
    try:
        session = services.session_ghost_mode_set(
            session_id=session.pk, mode=form.cleaned_data["mode"], by=request.user.get_username()
        )
    except services.SessionRefused as exc:
        return _refused(exc)
    response = HttpResponse(session_fragments.part(session=session, name="head"))
    return _toast(response, f"Ghost: {session.get_ghost_mode_display().lower()}.")


def _proposal(request: HttpRequest, session_id: str, proposal_id: str) -> GhostProposal:
    session = selectors.session_get_for_operator(user=request.user, session_id=session_id)
    return get_object_or_404(GhostProposal, pk=proposal_id, session_id=session.pk)


def _decided(proposal: GhostProposal, message: str, level: str = "info") -> HttpResponse:
    session = session_fragments.session_get(session_id=proposal.session_id)
    return _toast(
        HttpResponse(session_fragments.part(session=session, name="banner")), message, level
    )


@require_POST
def proposal_accept(request: HttpRequest, session_id: str, proposal_id: str) -> HttpResponse:
    proposal = _proposal(request, session_id, proposal_id)
    try:
        proposal = ghost.proposal_accept(
            proposal_id=proposal.pk, decided_by=request.user.get_username()
        )
    except ghost.ProposalRefused as exc:
        return _refused(exc)
    if proposal.state == GhostProposal.State.FAILED:
        return _decided(proposal, f"Accepted, but it failed: {proposal.result}", "error")
    if proposal.state == GhostProposal.State.ACCEPTED:
        return _decided(proposal, "Accepted: waiting for the crew to move the camera.")
    return _decided(proposal, f"Accepted: {proposal.result}.")


@require_POST
def proposal_veto(request: HttpRequest, session_id: str, proposal_id: str) -> HttpResponse:
    proposal = _proposal(request, session_id, proposal_id)
    form = VetoForm(request.POST)
    if not form.is_valid():
        return _toast(HttpResponse(status=400), form.error_text(), "error")
    try:
        proposal = ghost.proposal_veto(
            proposal_id=proposal.pk, decided_by=request.user.get_username(), **form.cleaned_data
        )
    except ghost.ProposalRefused as exc:
        return _refused(exc)
    return _decided(proposal, f"Vetoed: {proposal.get_veto_reason_display().lower()}.")


@require_POST
def proposal_done(request: HttpRequest, session_id: str, proposal_id: str) -> HttpResponse:
    """The crew moved the camera: the operator marks an accepted reposition done."""
    proposal = _proposal(request, session_id, proposal_id)
    try:
        proposal = ghost.proposal_execute(
            proposal_id=proposal.pk, marked_done_by=request.user.get_username()
        )
    except ghost.ProposalRefused as exc:
        return _refused(exc)
    session = session_fragments.session_get(session_id=proposal.session_id)
    response = HttpResponse(session_fragments.part(session=session, name="panel"))
    return _toast(response, f"{proposal.result}.")
