"""URL patterns of the device API, built on demand.

`motionmix/api_urls.py` mounts the routers of apps above this one into `devices.api.api`
first (devices never imports director), then builds the patterns here, once: Ninja refuses to
build one API's URLs twice.
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, JsonResponse
from django.urls import URLPattern, URLResolver, include, re_path

from devices.api import api, error_response


def _open_to_devices(patterns: list[URLPattern | URLResolver]) -> None:
    # Devices authenticate with their bearer token (or, to register, the pairing code), not
    # with an operator's login; LoginRequiredMiddleware must let these through.
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            _open_to_devices(pattern.url_patterns)
        else:
            pattern.callback.login_required = False  # type: ignore[union-attr]


@login_not_required
def not_found(request: HttpRequest, path: str) -> JsonResponse:
    return error_response(404, "not_found", f"There is no device API call at /api/v1/{path}.")


def device_api_urlpatterns() -> list[URLPattern | URLResolver]:
    """The API's patterns, with every router already mounted; call once."""
    # Not `app_name`: Django would take a module-level `app_name` as this URLconf's namespace
    # and nest Ninja's under it, and the OpenAPI view could no longer reverse its own root.
    api_patterns, api_app_name, api_namespace = api.urls
    _open_to_devices(api_patterns)
    return [
        # Ninja's root pattern (kept for reverse) answers an HTML 404 when docs are off.
        re_path(r"^$", not_found, {"path": ""}),
        re_path("", include((api_patterns, api_app_name), namespace=api_namespace)),
        re_path(r"^(?P<path>.*)$", not_found),
    ]
