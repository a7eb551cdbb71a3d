from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db

OPENAPI = "/api/v1/openapi.json"


@pytest.fixture
def document() -> dict[str, Any]:
    response = Client().get(OPENAPI)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("application/json")
    return dict(response.json())


def test_the_openapi_document_is_served_without_a_login() -> None:
    response = Client().get(OPENAPI)

    assert response.status_code == 200, response.content
    assert response.json()["info"]["title"] == "MotionMix Device API"


def test_it_documents_register_and_heartbeat_at_their_full_paths(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.")
    assert set(document["paths"]) >= {"/api/v1/devices/register", "/api/v1/devices/heartbeat"}
    assert set(document["paths"]["/api/v1/devices/register"]) == {"post"}
    assert set(document["paths"]["/api/v1/devices/heartbeat"]) == {"post"}


def test_register_documents_its_body_and_the_contracts_answers(document: dict[str, Any]) -> None:
    register = document["paths"]["/api/v1/devices/register"]["post"]

    assert set(register["responses"]) >= {"200", "201", "400", "403", "413", "415", "429"}
    body_ref = register["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = document["components"]["schemas"][body_ref.rsplit("/", 1)[-1]]
    assert set(schema["required"]) >= {"pairing_code", "install_id", "name", "kind", "lenses"}
    assert schema["properties"]["kind"]["enum"] == ["iphone", "ipad", "webcam"]
    assert "security" not in register


def test_heartbeat_documents_the_bearer_token(document: dict[str, Any]) -> None:
    heartbeat = document["paths"]["/api/v1/devices/heartbeat"]["post"]

    assert heartbeat["security"] == [{"DeviceToken": []}]
    scheme = document["components"]["securitySchemes"]["DeviceToken"]
    assert scheme == {"type": "http", "scheme": "bearer"}
    assert set(heartbeat["responses"]) >= {"200", "400", "401"}


def test_the_error_body_is_documented_as_error_and_detail(document: dict[str, Any]) -> None:
    register = document["paths"]["/api/v1/devices/register"]["post"]
    ref = register["responses"]["403"]["content"]["application/json"]["schema"]["$ref"]

    schema = document["components"]["schemas"][ref.rsplit("/", 1)[-1]]

    assert set(schema["properties"]) == {"error", "detail"}
