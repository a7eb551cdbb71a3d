"""The external Ghost API: another AI service posts proposals with a service token and learns
their fate. Every bad input answers a clear 4xx in the contract's error body."""

from __future__ import annotations

import json
import math
from datetime import timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from django.utils import timezone

from devices.api import JSON_BODY_LIMIT
from devices.models import Device
from director import ghost, services
from director.api_ghost import KindIn
from director.ghost_payloads import SCHEMAS, PayloadInvalid, validate_payload
from director.models import GhostProposal, PhotoshootSession, ServiceToken
from director.service_tokens import (
    ServiceTokenRevoked,
    hash_token,
    service_token_authenticate,
    service_token_create,
    service_token_revoke,
)
from ledger.models import ProductionEvent
from tests.devices.support import assert_error, database_text
from tests.support.api import heartbeat_body, register_device

pytestmark = pytest.mark.django_db

PROPOSALS = "/api/v1/ghost/proposals"
State = GhostProposal.State


# --- Helpers --------------------------------------------------------------------------------


def _session(
    operator: Any, *devices: Device, mode: str = "supervised", name: str = "Ghost take"
) -> PhotoshootSession:
    session = services.session_create(name=name, operator=operator)
    PhotoshootSession.objects.filter(pk=session.pk).update(ghost_mode=mode)
    return services.session_start(session_id=session.pk, device_ids=[d.pk for d in devices])


def _body(target: Device | None, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "switch_hero",
        "targets": [str(target.pk)] if target is not None else [],
        "payload": {},
        "rationale": "The chorus starts in two bars; Cam B has the wide shot.",
        "confidence": 0.7,
    }
    body.update(overrides)
    return body


def _post(
    client: Client,
    body: Any,
    token: str | None,
    content_type: str = "application/json",
) -> Any:
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post(PROPOSALS, data, content_type=content_type, **headers)


def _get(client: Client, proposal_id: object, token: str | None) -> Any:
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    return client.get(f"{PROPOSALS}/{proposal_id}", **headers)


@pytest.fixture
def client() -> Client:
    return Client()


@pytest.fixture
def cams(db: None) -> tuple[Device, Device]:
    return (
        register_device("iphone-a", name="Cam A").device,
        register_device("iphone-b", name="Cam B").device,
    )


@pytest.fixture
def live(operator: Any, cams: tuple[Device, Device]) -> PhotoshootSession:
    return _session(operator, *cams)


@pytest.fixture
def music(db: None) -> tuple[ServiceToken, str]:
    return service_token_create(name="music-model", created_by=None)


@pytest.fixture
def token(music: tuple[ServiceToken, str]) -> str:
    return music[1]


# --- The success path -----------------------------------------------------------------------


def test_a_service_posts_a_pending_proposal_under_its_external_policy_with_a_ledger_event(
    client: Client, live: PhotoshootSession, cams: tuple[Device, Device], token: str
) -> None:
    _, b = cams
    before = timezone.now()

    response = _post(client, _body(b, session_id=str(live.pk), ttl_s=15, priority=5), token)

    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == {"proposal_id", "session_id", "state", "expires_at", "superseded"}
    proposal = GhostProposal.objects.get(pk=UUID(body["proposal_id"]))
    assert (body["state"], body["session_id"], body["superseded"]) == (
        "pending",
        str(live.pk),
        None,
    )
    assert proposal.state == State.PENDING
    assert proposal.policy == "external:music-model"
    assert proposal.priority == 5
    assert list(proposal.targets.all()) == [b]
    assert body["expires_at"] == pytest.approx(proposal.expires_at.timestamp())
    assert 14 <= (proposal.expires_at - before).total_seconds() <= 16
    event = ProductionEvent.objects.get(type="ghost.proposed")
    assert event.session_id == live.pk
    assert event.payload["proposal_id"] == body["proposal_id"]
    assert event.payload["policy"] == "external:music-model"


def test_without_a_session_id_the_proposal_goes_to_the_one_live_session(
    client: Client, live: PhotoshootSession, cams: tuple[Device, Device], token: str
) -> None:
    response = _post(client, _body(cams[1]), token)

    assert response.status_code == 201, response.content
    assert response.json()["session_id"] == str(live.pk)


def test_a_reposition_is_stored_with_its_cleaned_payload(
    client: Client, live: PhotoshootSession, cams: tuple[Device, Device], token: str
) -> None:
    body = _body(
        cams[0],
        kind="reposition",
        payload={"azimuth_deg": 360, "distance_m": 2, "height_m": None},
        rationale="Move cam A to face the singer.",
    )

    response = _post(client, body, token)

    assert response.status_code == 201, response.content
    proposal = GhostProposal.objects.get(pk=response.json()["proposal_id"])
    assert proposal.payload == {"azimuth_deg": 0.0, "distance_m": 2.0}


def test_a_capture_all_may_name_no_camera(
    client: Client, live: PhotoshootSession, token: str
) -> None:
    response = _post(client, _body(None, kind="capture_all"), token)

    assert response.status_code == 201, response.content


def test_a_higher_priority_proposal_answers_with_the_one_it_superseded(
    client: Client, live: PhotoshootSession, cams: tuple[Device, Device], token: str
) -> None:
    first = _post(client, _body(cams[1]), token).json()

    response = _post(client, _body(cams[0], priority=10), token)

    assert response.status_code == 201, response.content
    assert response.json()["superseded"] == first["proposal_id"]
    assert GhostProposal.objects.get(pk=first["proposal_id"]).state == State.SUPERSEDED


# --- The body -------------------------------------------------------------------------------


def test_malformed_json_is_a_400_bad_json(
    client: Client, live: PhotoshootSession, token: str
) -> None:
    detail = assert_error(_post(client, '{"kind": "switch_hero",', token), 400, "bad_json")

    assert "not valid JSON" in detail
    assert not GhostProposal.objects.exists()


def test_an_array_body_is_a_400_bad_json(
    client: Client, live: PhotoshootSession, cams: tuple[Device, Device], token: str
) -> None:
    detail = assert_error(_post(client, [_body(cams[1])], token), 400, "bad_json")

    assert "JSON object" in detail


def test_a_body_that_is_not_json_is_a_415(
    client: Client, live: PhotoshootSession, token: str
) -> None:
    response = _post(client, "kind=switch_hero", token, content_type="text/plain")

    assert "application/json" in assert_error(response, 415, "unsupported_media_type")


def test_a_body_over_64_kib_is_a_413(
    client: Client, live: PhotoshootSession, cams: tuple[Device, Device], token: str
) -> None:
    body = _body(cams[1], payload={"pad": "x" * JSON_BODY_LIMIT})

    assert_error(_post(client, body, token), 413, "too_large")
    assert not GhostProposal.objects.exists()


def test_an_unknown_kind_is_a_422_naming_kind(
    client: Client, live: PhotoshootSession, cams: tuple[Device, Device], token: str
) -> None:
    detail = assert_error(_post(client, _body(cams[1], kind="dance"), token), 422, "invalid")

    assert detail.startswith("kind:")
    assert "switch_hero" in detail


def test_an_unknown_key_in_the_body_is_a_422_naming_it(
    client: Client, live: PhotoshootSession, cams: tuple[Device, Device], token: str
) -> None:
    response = _post(client, _body(cams[1], mood="upbeat"), token)

    assert "mood:" in assert_error(response, 422, "invalid")


@pytest.mark.parametrize(
    ("kind", "payload", "field"),
    [
        ("set_lens", {}, "payload.zoom"),
        ("set_lens", {"zoom": 0.05}, "payload.zoom"),
        ("set_lens", {"zoom": 300}, "payload.zoom"),
        ("set_lens", {"zoom": "2"}, "payload.zoom"),
        ("set_lens", {"zoom": True}, "payload.zoom"),
        ("set_lens", {"zoom": 2, "lens": "tele"}, "payload.lens"),
        ("set_flip", {"horizontal": True}, "payload.vertical"),
        ("set_flip", {"horizontal": "yes", "vertical": False}, "payload.horizontal"),
        ("reposition", {"distance_m": 2}, "payload.azimuth_deg"),
        ("reposition", {"azimuth_deg": 400}, "payload.azimuth_deg"),
        ("reposition", {"azimuth_deg": -5}, "payload.azimuth_deg"),
        ("reposition", {"azimuth_deg": 90, "distance_m": 0.1}, "payload.distance_m"),
        ("reposition", {"azimuth_deg": 90, "height_m": 6}, "payload.height_m"),
        ("switch_hero", {"zoom": 2}, "payload.zoom"),
        ("capture_still", {"burst": 3}, "payload.burst"),
        ("capture_all", {"delay_s": 1}, "payload.delay_s"),
    ],
)
def test_a_payload_that_does_not_fit_its_kind_is_a_422_naming_the_key(
    client: Client,
    live: PhotoshootSession,
    cams: tuple[Device, Device],
    token: str,
    kind: str,
    payload: dict[str, Any],
    field: str,
) -> None:
    response = _post(client, _body(cams[1], kind=kind, payload=payload), token)

    assert assert_error(response, 422, "invalid").startswith(f"{field}:")
    assert not GhostProposal.objects.exists()


def test_a_payload_that_is_not_an_object_is_a_422(
    client: Client, live: PhotoshootSession, cams: tuple[Device, Device], token: str
) -> None:
    response = _post(client, _body(cams[1], payload=[1, 2]), token)

    assert assert_error(response, 422, "invalid").startswith("payload:")


def test_a_confidence_of_1_5_is_a_422(
    client: Client, live: PhotoshootSession, cams: tuple[Device, Device], token: str
) -> None:
    response = _post(client, _body(cams[1], confidence=1.5), token)

    assert assert_error(response, 422, "invalid").startswith("confidence:")


@pytest.mark.parametrize("field", ["confidence", "ttl_s"])
def test_nan_is_refused_with_the_field_named(
    client: Client, live: PhotoshootSession, cams: tuple[Device, Device], token: str, field: str
) -> None:
    text = json.dumps(_body(cams[1], **{field: 0.5})).replace("0.5", "NaN")

    detail = assert_error(_post(client, text, token), 422, "invalid")

    assert detail.startswith(f"{field}:")
    assert "finite" in detail


def test_nan_in_a_payload_is_refused(
    client: Client, live: PhotoshootSession, cams: tuple[Device, Device], token: str
) -> None:
    text = json.dumps(_body(cams[1], kind="set_lens", payload={"zoom": 2.5})).replace("2.5", "NaN")

    detail = assert_error(_post(client, text, token), 422, "invalid")

    assert detail.startswith("payload.zoom:")
    assert not GhostProposal.objects.exists()


@pytest.mark.parametrize("rationale", ["", "   ", "x" * 201, "Two\nlines."])
def test_a_rationale_that_is_empty_too_long_or_not_one_line_is_a_422(
    client: Client,
    live: PhotoshootSession,
    cams: tuple[Device, Device],
    token: str,
    rationale: str,
) -> None:
    response = _post(client, _body(cams[1], rationale=rationale), token)

    assert assert_error(response, 422, "invalid").startswith("rationale:")


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"priority": 101}, "priority"),
        ({"priority": 1.5}, "priority"),
        ({"ttl_s": 1}, "ttl_s"),
        ({"ttl_s": 121}, "ttl_s"),
        ({"confidence": "0.5"}, "confidence"),
        ({"session_id": "not-a-uuid"}, "session_id"),
        ({"targets": ["cam-b"]}, "targets.0"),
    ],
)
def test_fields_out_of_range_or_of_the_wrong_type_are_a_422_naming_them(
    client: Client,
    live: PhotoshootSession,
    cams: tuple[Device, Device],
    token: str,
    overrides: dict[str, Any],
    field: str,
) -> None:
    response = _post(client, _body(cams[1], **overrides), token)

    assert assert_error(response, 422, "invalid").startswith(f"{field}:")


def test_a_missing_field_is_a_422_naming_it(
    client: Client, live: PhotoshootSession, cams: tuple[Device, Device], token: str
) -> None:
    body = _body(cams[1])
    del body["confidence"]

    assert "confidence: Field required" in assert_error(_post(client, body, token), 422, "invalid")


def test_a_single_camera_kind_naming_two_cameras_is_a_422(
    client: Client, live: PhotoshootSession, cams: tuple[Device, Device], token: str
) -> None:
    body = _body(cams[0], kind="set_lens", payload={"zoom": 2})
    body["targets"].append(str(cams[1].pk))

    detail = assert_error(_post(client, body, token), 422, "invalid")

    assert detail == "targets: a set_lens proposal names exactly one camera, not 2"


# --- Sessions and cameras -------------------------------------------------------------------


def test_a_target_outside_the_session_is_a_422(
    client: Client, operator: Any, cams: tuple[Device, Device], token: str
) -> None:
    _session(operator, cams[0])

    detail = assert_error(_post(client, _body(cams[1]), token), 422, "invalid")

    assert detail.startswith("targets: Cam B is not a camera of “Ghost take”")


def test_an_unknown_target_is_a_404(client: Client, live: PhotoshootSession, token: str) -> None:
    missing = uuid4()

    response = _post(client, {**_body(None), "targets": [str(missing)]}, token)

    assert str(missing) in assert_error(response, 404, "not_found")


def test_an_unknown_session_is_a_404(
    client: Client, live: PhotoshootSession, cams: tuple[Device, Device], token: str
) -> None:
    missing = uuid4()

    response = _post(client, _body(cams[1], session_id=str(missing)), token)

    assert str(missing) in assert_error(response, 404, "not_found")


def test_a_session_that_is_not_live_is_a_409(
    client: Client, operator: Any, cams: tuple[Device, Device], token: str
) -> None:
    session = _session(operator, *cams)
    services.session_stop(session_id=session.pk)

    response = _post(client, _body(cams[1], session_id=str(session.pk)), token)

    assert "is not live" in assert_error(response, 409, "conflict")
    assert not GhostProposal.objects.exists()


def test_a_session_with_ghost_off_is_a_409(
    client: Client, operator: Any, cams: tuple[Device, Device], token: str
) -> None:
    _session(operator, *cams, mode="off")

    response = _post(client, _body(cams[1]), token)

    assert "Ghost is off" in assert_error(response, 409, "conflict")


def test_without_a_session_id_and_no_live_session_it_is_a_409(
    client: Client, cams: tuple[Device, Device], token: str
) -> None:
    response = _post(client, _body(cams[1]), token)

    assert "No session is live" in assert_error(response, 409, "conflict")


def test_without_a_session_id_and_two_live_sessions_it_is_a_422_naming_session_id(
    client: Client, operator: Any, cams: tuple[Device, Device], token: str
) -> None:
    _session(operator, cams[0], name="Studio A")
    _session(operator, cams[1], name="Studio B")

    detail = assert_error(_post(client, _body(cams[1]), token), 422, "invalid")

    assert detail.startswith("session_id: more than one session is live")
    assert "Studio A" in detail
    assert "Studio B" in detail


# --- Tokens ---------------------------------------------------------------------------------


def test_a_call_without_a_token_is_a_401_with_a_bearer_challenge(
    client: Client, live: PhotoshootSession, cams: tuple[Device, Device]
) -> None:
    response = _post(client, _body(cams[1]), None)

    assert "service token is required" in assert_error(response, 401, "unauthorized")
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert not GhostProposal.objects.exists()


def test_a_wrong_token_is_a_401_with_a_bearer_challenge(
    client: Client, live: PhotoshootSession, cams: tuple[Device, Device], token: str
) -> None:
    response = _post(client, _body(cams[1]), token[:-2] + "xx")

    assert_error(response, 401, "unauthorized")
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_a_revoked_token_is_a_403_on_both_calls(
    client: Client,
    live: PhotoshootSession,
    cams: tuple[Device, Device],
    music: tuple[ServiceToken, str],
) -> None:
    row, raw = music
    proposal_id = _post(client, _body(cams[1]), raw).json()["proposal_id"]
    service_token_revoke(token_id=row.pk)

    detail = assert_error(_post(client, _body(cams[1]), raw), 403, "forbidden")

    assert "revoked" in detail
    assert "music-model" in detail
    assert_error(_get(client, proposal_id, raw), 403, "forbidden")
    assert GhostProposal.objects.count() == 1


def test_a_device_token_does_not_work_here(
    client: Client, live: PhotoshootSession, cams: tuple[Device, Device]
) -> None:
    device_token = register_device("iphone-c", name="Cam C").token

    response = _post(client, _body(cams[1]), device_token)

    assert "device tokens do not work here" in assert_error(response, 401, "unauthorized")


def test_a_service_token_does_not_work_on_the_device_api(client: Client, token: str) -> None:
    response = client.post(
        "/api/v1/devices/heartbeat",
        json.dumps(heartbeat_body()),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )

    assert_error(response, 401, "unauthorized")


def test_the_token_is_stored_only_as_its_hash_with_a_short_prefix(
    music: tuple[ServiceToken, str],
) -> None:
    row, raw = music

    assert raw.startswith("mmx_svc_")
    assert len(raw) >= len("mmx_svc_") + 43
    assert row.token_hash == hash_token(raw)
    assert raw.startswith(row.prefix)
    assert len(row.prefix) < 16
    assert raw not in database_text()


def test_authenticating_marks_the_token_used_at_most_once_a_minute(
    music: tuple[ServiceToken, str],
) -> None:
    row, raw = music
    assert row.last_used_at is None

    first = service_token_authenticate(raw)
    assert first is not None
    used_at = ServiceToken.objects.get(pk=row.pk).last_used_at
    assert used_at is not None
    service_token_authenticate(raw)
    assert ServiceToken.objects.get(pk=row.pk).last_used_at == used_at

    earlier = used_at - timedelta(minutes=2)
    ServiceToken.objects.filter(pk=row.pk).update(last_used_at=earlier)
    service_token_authenticate(raw)
    assert ServiceToken.objects.get(pk=row.pk).last_used_at > earlier  # type: ignore[operator]


def test_authenticating_a_revoked_token_raises_and_an_unknown_one_is_none(
    music: tuple[ServiceToken, str],
) -> None:
    row, raw = music
    assert service_token_authenticate("mmx_svc_nothing") is None
    assert service_token_authenticate("") is None
    first = service_token_revoke(token_id=row.pk).revoked_at

    with pytest.raises(ServiceTokenRevoked):
        service_token_authenticate(raw)
    assert service_token_revoke(token_id=row.pk).revoked_at == first  # idempotent


def test_a_token_name_must_be_unique_and_fit_the_policy(
    music: tuple[ServiceToken, str],
) -> None:
    with pytest.raises(ValidationError):
        service_token_create(name="music-model", created_by=None)
    with pytest.raises(ValidationError):
        service_token_create(name="Music Model!", created_by=None)
    with pytest.raises(ValidationError):
        service_token_create(name="m" * (ServiceToken.NAME_MAX_LENGTH + 1), created_by=None)


# --- The proposal's fate --------------------------------------------------------------------


def test_the_service_learns_the_fate_of_its_proposal_after_a_veto(
    client: Client, live: PhotoshootSession, cams: tuple[Device, Device], token: str
) -> None:
    proposal_id = _post(client, _body(cams[1]), token).json()["proposal_id"]
    pending = _get(client, proposal_id, token)
    assert pending.status_code == 200, pending.content
    assert (pending.json()["state"], pending.json()["decided_by"]) == ("pending", "")

    ghost.proposal_veto(proposal_id=UUID(proposal_id), decided_by="op", reason="wrong_moment")
    response = _get(client, proposal_id, token)

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["proposal_id"] == proposal_id
    assert body["state"] == "vetoed"
    assert body["decided_by"] == "op"
    assert body["veto_reason"] == "wrong_moment"
    assert body["result"] == ""
    assert body["decided_at"] is not None


def test_the_service_learns_the_result_of_an_accepted_proposal(
    client: Client, live: PhotoshootSession, cams: tuple[Device, Device], token: str
) -> None:
    proposal_id = _post(client, _body(cams[1]), token).json()["proposal_id"]
    ghost.proposal_accept(proposal_id=UUID(proposal_id), decided_by="op")

    body = _get(client, proposal_id, token).json()

    assert (body["state"], body["result"]) == ("executed", "Cam B is on air")


def test_a_proposal_of_another_token_or_of_a_policy_is_a_404(
    client: Client, live: PhotoshootSession, cams: tuple[Device, Device], token: str
) -> None:
    _, other = service_token_create(name="lighting-model", created_by=None)
    theirs = _post(client, _body(cams[1]), other).json()["proposal_id"]
    policy = ghost.proposal_create(
        session_id=live.pk,
        kind="switch_hero",
        target_ids=[cams[0].pk],
        payload={},
        rationale="Cam A sees the face.",
        confidence=0.9,
        policy="hero-staleness",
    )

    assert_error(_get(client, theirs, token), 404, "not_found")
    assert_error(_get(client, policy.pk, token), 404, "not_found")
    assert_error(_get(client, uuid4(), token), 404, "not_found")
    assert _get(client, theirs, other).status_code == 200


def test_reading_a_proposal_needs_a_token(client: Client) -> None:
    response = _get(client, uuid4(), None)

    assert_error(response, 401, "unauthorized")
    assert response["WWW-Authenticate"].startswith("Bearer")


# --- The payload schema ---------------------------------------------------------------------


def test_every_kind_has_one_payload_schema_and_the_api_accepts_exactly_those_kinds() -> None:
    assert set(SCHEMAS) == set(GhostProposal.Kind.values)
    assert set(KindIn.__args__) == set(GhostProposal.Kind.values)


def test_validate_payload_cleans_numbers_and_refuses_what_does_not_fit() -> None:
    assert validate_payload("set_lens", {"zoom": 3}) == {"zoom": 3.0}
    assert validate_payload("set_flip", {"horizontal": True, "vertical": False}) == {
        "horizontal": True,
        "vertical": False,
    }
    assert validate_payload("reposition", {"azimuth_deg": 200}) == {"azimuth_deg": 200.0}
    assert validate_payload("capture_all", {}) == {}
    with pytest.raises(PayloadInvalid, match=r"payload\.zoom"):
        validate_payload("set_lens", {"zoom": math.inf})
    with pytest.raises(PayloadInvalid, match="kind"):
        validate_payload("dance", {})
    with pytest.raises(PayloadInvalid) as refused:
        validate_payload("switch_hero", {"extra": 1})
    assert refused.value.field == "payload.extra"
    assert isinstance(refused.value, ValueError)


# --- The admin ------------------------------------------------------------------------------


def test_adding_a_token_in_the_admin_shows_it_once(admin_client: Client, admin_user: Any) -> None:
    form = admin_client.get("/admin/director/servicetoken/add/")
    assert form.status_code == 200
    assert b'name="name"' in form.content
    assert b"token_hash" not in form.content

    response = admin_client.post(
        "/admin/director/servicetoken/add/", {"name": "music-model"}, follow=True
    )

    assert response.status_code == 200
    row = ServiceToken.objects.get(name="music-model")
    assert row.created_by == admin_user
    shown = [str(m) for m in response.context["messages"]]
    plain = next(m for m in shown if "copy it now; it is not shown again" in m)
    raw = next(word for word in plain.split() if word.startswith("mmx_svc_"))
    assert hash_token(raw) == row.token_hash
    assert raw.encode() in response.content
    assert service_token_authenticate(raw) == row

    listing = admin_client.get("/admin/director/servicetoken/")
    change = admin_client.get(f"/admin/director/servicetoken/{row.pk}/change/")
    for page in (listing, change):
        assert page.status_code == 200
        assert raw.encode() not in page.content
        assert row.prefix.encode() in page.content
    assert raw not in database_text()


def test_a_taken_name_is_refused_by_the_admin_form(
    admin_client: Client, music: tuple[ServiceToken, str]
) -> None:
    response = admin_client.post("/admin/director/servicetoken/add/", {"name": "music-model"})

    assert response.status_code == 200
    assert b"already exists" in response.content
    assert ServiceToken.objects.count() == 1


def test_the_admin_revoke_action_revokes_and_the_token_no_longer_works(
    admin_client: Client,
    client: Client,
    live: PhotoshootSession,
    cams: tuple[Device, Device],
    music: tuple[ServiceToken, str],
) -> None:
    row, raw = music

    response = admin_client.post(
        "/admin/director/servicetoken/",
        {"action": "revoke", "_selected_action": [str(row.pk)]},
        follow=True,
    )

    assert response.status_code == 200
    assert b"Revoked 1 service token" in response.content
    assert ServiceToken.objects.get(pk=row.pk).revoked_at is not None
    assert_error(_post(client, _body(cams[1]), raw), 403, "forbidden")


def test_the_admin_cannot_delete_a_token_nor_edit_its_hash(
    admin_client: Client, music: tuple[ServiceToken, str]
) -> None:
    row, _ = music

    delete = admin_client.get(f"/admin/director/servicetoken/{row.pk}/delete/")
    admin_client.post(
        f"/admin/director/servicetoken/{row.pk}/change/",
        {"name": "renamed", "token_hash": "0" * 64},
    )

    assert delete.status_code == 403
    unchanged = ServiceToken.objects.get(pk=row.pk)
    assert (unchanged.name, unchanged.token_hash) == ("music-model", row.token_hash)


# --- The OpenAPI document -------------------------------------------------------------------


def test_the_openapi_document_lists_the_ghost_calls_with_the_service_token() -> None:
    document = Client().get("/api/v1/openapi.json").json()

    post = document["paths"]["/api/v1/ghost/proposals"]["post"]
    get = document["paths"]["/api/v1/ghost/proposals/{proposal_id}"]["get"]
    assert post["security"] == [{"ServiceToken": []}]
    assert get["security"] == [{"ServiceToken": []}]
    assert document["components"]["securitySchemes"]["ServiceToken"] == {
        "type": "http",
        "scheme": "bearer",
    }
    assert set(post["responses"]) >= {"201", "400", "401", "403", "404", "409", "413", "422"}
    schema = post["requestBody"]["content"]["application/json"]["schema"]
    assert set(schema["required"]) >= {"kind", "targets", "payload", "rationale", "confidence"}
    assert set(schema["properties"]["kind"]["enum"]) == set(GhostProposal.Kind.values)
    assert schema["additionalProperties"] is False
    assert "200" in get["responses"]
