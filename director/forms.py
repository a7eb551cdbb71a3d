from __future__ import annotations

from django import forms

from devices.models import Device, DeviceCommand
from director.models import GhostProposal, PhotoshootSession


class SessionForm(forms.Form):
    name = forms.CharField(max_length=120, strip=True)
    notes = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))


class ErrorTextMixin:
    errors: dict[str, list[str]]

    def error_text(self) -> str:
        return " ".join(f"{field}: {' '.join(messages)}" for field, messages in self.errors.items())


class ZoomForm(ErrorTextMixin, forms.Form):
    # The lens plan decides what the device can do; this only checks it is a sane number.
    zoom = forms.FloatField(min_value=0.1, max_value=100)


class FlipForm(ErrorTextMixin, forms.Form):
    axis = forms.ChoiceField(choices=[("horizontal", "Horizontal"), ("vertical", "Vertical")])

    def flip_for(self, device: Device) -> dict[str, bool]:
        """The flip to ask for: the device's current flip with this axis toggled. The current
        flip is what an unanswered set_flip asked for, else what the device reports, so two
        quick presses toggle twice instead of sending the same flip twice."""
        current = {"horizontal": device.flip_horizontal, "vertical": device.flip_vertical}
        pending = (
            device.commands.filter(type="set_flip", state__in=DeviceCommand.OPEN_STATES)
            .order_by("-issued_at")
            .first()
        )
        if pending is not None:
            current = {k: bool(pending.args.get(k)) for k in current}
        axis = self.cleaned_data["axis"]
        return {**current, axis: not current[axis]}


class GhostModeForm(ErrorTextMixin, forms.Form):
    mode = forms.ChoiceField(choices=PhotoshootSession.GhostMode.choices)


class VetoForm(ErrorTextMixin, forms.Form):
    reason = forms.ChoiceField(choices=GhostProposal.VetoReason.choices)
    note = forms.CharField(required=False, max_length=200, strip=True)
