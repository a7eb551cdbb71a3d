from __future__ import annotations

from typing import Any

from django import template

from director.export.selectors import export_panel_context
from director.models import PhotoshootSession

register = template.Library()


@register.inclusion_tag("director/partials/export_panel.html")
def export_panel(session: PhotoshootSession) -> dict[str, Any]:
    return export_panel_context(session=session)
