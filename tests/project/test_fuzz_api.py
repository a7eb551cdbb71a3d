"""Fuzzing the device API from its own OpenAPI document (schemathesis on hypothesis).

Every operation of `/api/v1/openapi.json` gets generated calls, valid and not, sent in-process
through the real ASGI application (`motionmix.asgi.application`: the fast paths, the body
limits, Django, Ninja), with a registered device's token on device calls and a Ghost service
token on `/api/v1/ghost/`. No call may answer 5xx, and every 4xx must be the contract's error
body, `{"error": code, "detail": text}`. The run is bounded and derandomized (the same cases on
every run), so CI is reproducible.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings

from devices.heartbeats import writers_stop
from devices.services import pairing_code_get_or_rotate
from director.service_tokens import service_token_create
from motionmix.asgi import application
from tests.support.api import register_device

pytestmark = pytest.mark.django_db(transaction=True)

GHOST_PREFIX = "/api/v1/ghost/"
COMMANDS_PATH = "/api/v1/devices/commands"
REGISTER_PATH = "/api/v1/devices/register"
# A long poll may wait up to 25 s; a generated wait that the server would honour is cut to
# this, so the run stays short (waits it must refuse are sent as generated).
LONGEST_POLL_S = 0.2


@pytest.fixture
def tokens(settings: Any) -> Iterator[dict[str, str]]:
    # The rate limits are tested on their own (test_rate_limits.py); here they would soon
    # answer every register call 429 and hide the endpoint behind them.
    settings.MOTIONMIX_PAIRING_MAX_FAILURES = 1_000_000
    settings.MOTIONMIX_REGISTER_MAX_PER_ADDRESS = 1_000_000
    settings.MOTIONMIX_REGISTER_MAX_PER_INSTALL = 1_000_000
    device = register_device("fuzz-camera").token
    _, service = service_token_create(name="fuzz-service", created_by=None)
    yield {
        "device": device,
        "service": service,
        "pairing_code": pairing_code_get_or_rotate().code,
    }
    # The heartbeat writer thread holds a connection of its own; give it back first.
    writers_stop()


# WHIP offers (application/sdp) are text; sent as generated.
schemathesis.serializer.alias("application/sdp", "text/plain")
# Loaded at collection, through the app: the document needs no database.
schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", application)


def _bounded_wait(case: Any) -> None:
    query = case.query or {}
    try:
        wait = float(query.get("wait", "x"))
    except (TypeError, ValueError):
        return
    if LONGEST_POLL_S < wait <= 25:
        query["wait"] = LONGEST_POLL_S


def _assert_contract(case: Any, response: Any) -> None:
    where = f"{case.method} {case.formatted_path}"
    reproduce = case.as_curl_command()
    assert response.status_code < 500, (
        f"{where} answered {response.status_code}: {response.text[:500]}\n{reproduce}"
    )
    if response.status_code >= 400:
        content_type = (response.headers.get("content-type") or [""])[0]
        assert content_type.startswith("application/json"), (
            f"{where} answered {response.status_code} as {content_type!r}: "
            f"{response.text[:300]}\n{reproduce}"
        )
        body = json.loads(response.content)
        assert isinstance(body, dict) and set(body) == {"error", "detail"}, (
            f"{where} answered {response.status_code} with {body!r}\n{reproduce}"
        )
        assert isinstance(body["error"], str) and body["error"], body
        assert isinstance(body["detail"], str) and body["detail"], body


@schema.parametrize()
@settings(
    max_examples=25,
    derandomize=True,
    deadline=None,
    database=None,
    # Shrinking only runs after a failure; it is skipped so a failure reports at once.
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_no_generated_call_gets_a_5xx_and_every_4xx_is_the_contracts_error_body(
    case: Any, tokens: dict[str, str]
) -> None:
    token = tokens["service"] if case.path.startswith(GHOST_PREFIX) else tokens["device"]
    if case.path == COMMANDS_PATH:
        _bounded_wait(case)
    if case.path == REGISTER_PATH and isinstance(case.body, dict) and "pairing_code" in case.body:
        # The right code, so that generated registrations get past pairing (a wrong one is
        # a plain 403) and into the rest of the endpoint.
        case.body["pairing_code"] = tokens["pairing_code"]
    response = case.call(headers={"Authorization": f"Bearer {token}"})
    _assert_contract(case, response)
