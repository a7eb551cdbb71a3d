"""`{% stills_strip %}`: the stills strip with its data, for pages whose views do not load it."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django import template

from director.stills.fragments import STRIP_TEMPLATE, strip_context

register = template.Library()


@register.inclusion_tag(STRIP_TEMPLATE)
def stills_strip(oob: bool = False, session_id: UUID | None = None) -> dict[str, Any]:
    return strip_context(oob=oob, session_id=session_id)
