from __future__ import annotations

from uuid import UUID

from django import template

from director import dom

register = template.Library()


@register.filter
def card_id(device_id: UUID | str) -> str:
    return dom.device_card_id(device_id)


@register.simple_tag
def dom_id(name: str) -> str:
    return str(getattr(dom, name))
