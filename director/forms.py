from __future__ import annotations

from django import forms


class SessionForm(forms.Form):
    name = forms.CharField(max_length=120, strip=True)
    notes = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
