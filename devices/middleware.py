from __future__ import annotations

import logging

from django.http import HttpRequest, HttpResponse
from django.utils.deprecation import MiddlewareMixin

from devices.api import HTTP_ERROR_CODES, error_response

logger = logging.getLogger(__name__)

API_PREFIX = "/api/v1/"


class DeviceApiErrors(MiddlewareMixin):
    """Keeps every error under /api/v1/ in the contract's JSON body, including the ones Django
    or Ninja produce themselves (405 for a wrong method, 500 for a bug)."""

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not request.path.startswith(API_PREFIX):
            return None
        logger.exception("device API call %s %s failed", request.method, request.path)
        return error_response(
            500, "server_error", "The server failed on this call; nothing was stored. Retry."
        )

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        if (
            not request.path.startswith(API_PREFIX)
            or response.status_code < 400
            or response.get("Content-Type", "").startswith("application/json")
        ):
            return response
        status = response.status_code
        detail = {
            405: f"{request.method} is not allowed here; use {response.get('Allow', 'another')}.",
        }.get(status, "The server refused this call.")
        replacement = error_response(status, HTTP_ERROR_CODES.get(status, "error"), detail)
        if "Allow" in response:
            replacement["Allow"] = response["Allow"]
        return replacement
