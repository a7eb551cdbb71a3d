"""Ghost proposals from other AI services: `POST /api/v1/ghost/proposals` and
`GET /api/v1/ghost/proposals/{id}`.

A ninja Router mounted into the device API by `motionmix/api_urls.py`, with its own bearer
tokens (`director/service_tokens.py`): a device token opens nothing here and a service token
nothing there. The body is parsed here rather than by Ninja so that a schema violation answers
422 naming the field, as this API promises, while the device calls keep their 400.
"""

from __future__ import annotations

import json
from typing import Any, Literal
from uuid import UUID

from django.http import HttpRequest, HttpResponse
from ninja import Router, Schema, Status
from ninja.decorators import decorate_view
from ninja.security import HttpBearer
from pydantic import ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from devices.api import ERRORS, error_response, json_body
from devices.models import Device
from director import ghost, models, service_tokens
from director.ghost_payloads import PayloadInvalid, validate_payload
from director.models import GhostProposal, PhotoshootSession

router = Router(tags=["ghost"])

KindIn = Literal[
    "switch_hero", "capture_still", "capture_all", "set_lens", "set_flip", "reposition"
]
MAX_TARGETS = 32

# --- Auth -----------------------------------------------------------------------------------


class ServiceAuthFailed(Exception):
    """No usable service token (401, with a Bearer challenge) or a revoked one (403)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def service_auth_failed(request: HttpRequest, exc: ServiceAuthFailed) -> HttpResponse:
    """The API's handler for `ServiceAuthFailed`; `motionmix/api_urls.py` registers it."""
    if exc.status == 401:
        return error_response(
            401,
            "unauthorized",
            exc.detail,
            {"WWW-Authenticate": 'Bearer realm="motionmix-services"'},
        )
    return error_response(exc.status, "forbidden", exc.detail)


class ServiceToken(HttpBearer):
    """`Authorization: Bearer mmx_svc_…`, a token an admin created under Service tokens."""

    def __call__(self, request: HttpRequest) -> models.ServiceToken:
        scheme, _, raw = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not raw.strip():
            raise ServiceAuthFailed(
                401,
                "A service token is required: send Authorization: Bearer mmx_svc_…; an admin "
                "creates one under Live Director > Service tokens.",
            )
        return self.authenticate(request, raw.strip())

    def authenticate(self, request: HttpRequest, token: str) -> models.ServiceToken:
        try:
            found = service_tokens.service_token_authenticate(token)
        except service_tokens.ServiceTokenRevoked as exc:
            raise ServiceAuthFailed(403, str(exc)) from None
        if found is None:
            raise ServiceAuthFailed(
                401,
                "This is not a valid service token (device tokens do not work here); send the "
                "mmx_svc_… token an admin created for this service.",
            )
        return found


service_auth = ServiceToken()


def _token(request: HttpRequest) -> models.ServiceToken:
    token = request.auth  # type: ignore[attr-defined]
    assert isinstance(token, models.ServiceToken)
    return token


# --- Schemas --------------------------------------------------------------------------------


class ProposalIn(Schema):
    model_config = ConfigDict(strict=True, extra="forbid")

    session_id: UUID | None = Field(
        default=None, description="Default: the one live session (409 if none, 422 if several)."
    )
    kind: KindIn
    targets: list[UUID] = Field(
        max_length=MAX_TARGETS,
        description="Device ids: exactly one for switch_hero, set_lens, set_flip and "
        "reposition; any number (or none: every online camera) for the captures.",
    )
    payload: dict[str, Any] = Field(
        description="By kind: set_lens {zoom: 0.1..100}; set_flip {horizontal, vertical}; "
        "reposition {azimuth_deg: 0..360, distance_m?: 0.2..50, height_m?: 0..5}; "
        "otherwise {}."
    )
    rationale: str = Field(
        min_length=1, max_length=200, description="One short sentence the operator reads."
    )
    confidence: float = Field(ge=0, le=1, allow_inf_nan=False)
    priority: int = Field(
        default=0, ge=-100, le=100, description="Higher supersedes the proposal on the banner."
    )
    ttl_s: float | None = Field(
        default=None, ge=2, le=120, allow_inf_nan=False, description="Countdown, seconds."
    )

    @field_validator("rationale")
    @classmethod
    def _one_line(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("write one short sentence the operator can read")
        if any(ch < " " or ch == "\x7f" for ch in value):
            raise ValueError("one sentence on one line, without control characters")
        return value

    @field_validator("targets")
    @classmethod
    def _targets_fit_the_kind(cls, targets: list[UUID], info: ValidationInfo) -> list[UUID]:
        if len(set(targets)) != len(targets):
            raise ValueError("each camera may be named once")
        kind = info.data.get("kind")
        if kind in ghost.SINGLE_TARGET and len(targets) != 1:
            raise ValueError(f"a {kind} proposal names exactly one camera, not {len(targets)}")
        return targets


class ProposalCreatedOut(Schema):
    proposal_id: str
    session_id: str
    state: str
    expires_at: float = Field(description="Server clock, unix s.")
    superseded: str | None = Field(
        description="The proposal this one took off the banner (it had a lower priority)."
    )


class ProposalOut(Schema):
    proposal_id: str
    session_id: str
    kind: str
    state: str = Field(
        description="pending, then accepted, vetoed, expired or superseded; an accepted one "
        "ends executed or failed. A pending one past expires_at is about to expire."
    )
    expires_at: float = Field(description="Server clock, unix s.")
    decided_by: str = Field(description="The operator, or autopilot; empty while pending.")
    decided_at: float | None = Field(description="Server clock, unix s.")
    veto_reason: str = Field(description="bad_framing, wrong_moment, device_problem or other.")
    veto_note: str
    superseded_by: str | None
    result: str = Field(description="What carrying it out did, or why it failed.")


# --- Parsing --------------------------------------------------------------------------------


def _invalid(detail: str) -> HttpResponse:
    return error_response(422, "invalid", detail)


def _format_errors(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(p) for p in error.get("loc", ())) or "body"
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


def _parse(body: bytes) -> ProposalIn | HttpResponse:
    try:
        raw = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return error_response(400, "bad_json", f"The body is not valid JSON: {exc}.")
    if not isinstance(raw, dict):
        return error_response(400, "bad_json", "The body must be a JSON object.")
    try:
        # JSON mode: strict types, but ids may be written as strings.
        return ProposalIn.model_validate_json(body)
    except ValidationError as exc:
        return _invalid(_format_errors(exc))


def _session(session_id: UUID | None) -> PhotoshootSession | HttpResponse:
    if session_id is not None:
        session = PhotoshootSession.objects.filter(pk=session_id).first()
        if session is None:
            return error_response(404, "not_found", f"There is no session {session_id}.")
        return session
    live = list(
        PhotoshootSession.objects.filter(status=PhotoshootSession.Status.LIVE).order_by(
            "-started_at"
        )[:5]
    )
    if not live:
        return error_response(
            409, "conflict", "No session is live; Ghost proposes only during a take."
        )
    if len(live) > 1:
        names = ", ".join(f"“{s.name}” ({s.pk})" for s in live)
        return _invalid(f"session_id: more than one session is live ({names}); name one.")
    return live[0]


def _check_targets(session: PhotoshootSession, target_ids: list[UUID]) -> HttpResponse | None:
    known = {d.pk: d for d in Device.objects.filter(pk__in=target_ids)}
    unknown = [str(pk) for pk in target_ids if pk not in known]
    if unknown:
        return error_response(404, "not_found", f"targets: there is no camera {unknown[0]}.")
    taking_part = set(session.devices.filter(pk__in=target_ids).values_list("pk", flat=True))
    outside = [known[pk].name for pk in target_ids if pk not in taking_part]
    if outside:
        names = ", ".join(outside)
        verb = "is not a camera" if len(outside) == 1 else "are not cameras"
        return _invalid(f"targets: {names} {verb} of “{session.name}”; name its cameras.")
    return None


# --- Endpoints ------------------------------------------------------------------------------

PROPOSAL_BODY: dict[str, Any] = {
    "required": True,
    "content": {"application/json": {"schema": ProposalIn.model_json_schema()}},
}


@router.post(
    "/proposals",
    auth=service_auth,
    response={201: ProposalCreatedOut, **ERRORS},
    summary="Propose an action to the operator (another AI service)",
    description="Queues a pending proposal for a live session whose Ghost is on; the operator "
    "accepts or vetoes it (in autopilot it is carried out when its countdown ends). Its "
    "policy reads external:<token name>. 400 malformed JSON; 401/403 token; 404 unknown "
    "session or camera; 409 no live session, the session is not live or Ghost is off; 413 "
    "over 64 KiB; 415 not application/json; 422 a field that does not fit, named.",
    openapi_extra={"requestBody": PROPOSAL_BODY},
)
@decorate_view(json_body())
def proposal_post(request: HttpRequest) -> Status[dict[str, Any]] | HttpResponse:
    token = _token(request)
    proposal_in = _parse(request.body)
    if isinstance(proposal_in, HttpResponse):
        return proposal_in
    try:
        payload = validate_payload(proposal_in.kind, proposal_in.payload)
    except PayloadInvalid as exc:
        return _invalid(str(exc))
    session = _session(proposal_in.session_id)
    if isinstance(session, HttpResponse):
        return session
    refusal = _check_targets(session, proposal_in.targets)
    if refusal is not None:
        return refusal
    try:
        proposal = ghost.proposal_create(
            session_id=session.pk,
            kind=proposal_in.kind,
            target_ids=proposal_in.targets,
            payload=payload,
            rationale=proposal_in.rationale,
            confidence=proposal_in.confidence,
            policy=token.policy,
            priority=proposal_in.priority,
            ttl_s=proposal_in.ttl_s,
        )
    except ghost.ProposalRefused as exc:
        return error_response(409, "conflict", str(exc))
    except PhotoshootSession.DoesNotExist:
        return error_response(404, "not_found", f"There is no session {session.pk}.")
    superseded = GhostProposal.objects.filter(superseded_by=proposal).values_list("pk", flat=True)
    return Status(
        201,
        {
            "proposal_id": str(proposal.pk),
            "session_id": str(proposal.session_id),
            "state": proposal.state,
            "expires_at": proposal.expires_at.timestamp(),
            "superseded": next((str(pk) for pk in superseded), None),
        },
    )


@router.get(
    "/proposals/{proposal_id}",
    auth=service_auth,
    response={200: ProposalOut, **ERRORS},
    summary="The fate of a proposal this token posted",
    description="Its state, who decided, the veto reason and the result. Only proposals posted "
    "with this token are found; any other id is 404.",
)
def proposal_get(request: HttpRequest, proposal_id: UUID) -> dict[str, Any] | HttpResponse:
    token = _token(request)
    proposal = GhostProposal.objects.filter(pk=proposal_id, policy=token.policy).first()
    if proposal is None:
        return error_response(
            404, "not_found", f"There is no proposal {proposal_id} posted with this token."
        )
    return {
        "proposal_id": str(proposal.pk),
        "session_id": str(proposal.session_id),
        "kind": proposal.kind,
        "state": proposal.state,
        "expires_at": proposal.expires_at.timestamp(),
        "decided_by": proposal.decided_by,
        "decided_at": proposal.decided_at.timestamp() if proposal.decided_at else None,
        "veto_reason": proposal.veto_reason,
        "veto_note": proposal.veto_note,
        "superseded_by": str(proposal.superseded_by_id) if proposal.superseded_by_id else None,
        "result": proposal.result,
    }
