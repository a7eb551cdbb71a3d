"""The coverage map: its partial, and placing a camera from it. Thin: parse, call the
placement service, render the map. Every other operator tab gets the same map by push."""

from __future__ import annotations

import json
from uuid import UUID

from django import forms
from django.core.exceptions import NON_FIELD_ERRORS
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET, require_POST

from devices import services
from devices.models import Device
from director.coverage_map import current_coverage_map

MAP_TEMPLATE = "director/partials/coverage_map.html"


class PlacementForm(forms.Form):
    """Any of the three; a blank one keeps what is stored."""

    azimuth_deg = forms.FloatField(required=False, label="Azimuth")
    distance_m = forms.FloatField(required=False, label="Distance")
    height_m = forms.FloatField(required=False, label="Height")

    def clean(self) -> dict[str, float | None]:
        cleaned = super().clean() or {}
        if not self.errors and all(cleaned.get(name) is None for name in self.fields):
            raise forms.ValidationError("send an azimuth, a distance or a height.")
        return cleaned

    def problem(self) -> str:
        for name, errors in self.errors.items():
            if name == NON_FIELD_ERRORS:
                return str(errors[0])
            return f"{self.fields[name].label} must be a number, not “{self.data.get(name)}”."
        return ""


def _toast(response: HttpResponse, message: str, level: str = "info") -> HttpResponse:
    response["HX-Trigger"] = json.dumps({"toast": {"level": level, "message": message}})
    return response


def _map(request: HttpRequest) -> HttpResponse:
    return render(request, MAP_TEMPLATE, {"coverage": current_coverage_map()})


@require_GET
def coverage_map(request: HttpRequest) -> HttpResponse:
    return _map(request)


@require_POST
def device_place(request: HttpRequest, device_id: UUID) -> HttpResponse:
    device = get_object_or_404(Device.objects.only("pk", "name"), pk=device_id)
    form = PlacementForm(request.POST)
    if not form.is_valid():
        return _toast(
            HttpResponse(status=400), f"{device.name} was not moved: {form.problem()}", "error"
        )
    try:
        services.device_place(
            device_id=device.pk, source=Device.PlacementSource.OPERATOR, **form.cleaned_data
        )
    except services.PlacementRefused as exc:
        return _toast(HttpResponse(status=400), f"{device.name} was not moved: {exc}", "error")
    return _map(request)
