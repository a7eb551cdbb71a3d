"""Rendered out-of-band fragments for the operator socket: the same partials the pages use."""

from __future__ import annotations

from collections.abc import Iterable

from django.template.loader import render_to_string

from director import dom, selectors
from director.coverage_map import build_coverage_map, current_coverage_map
from director.pairing import pairing_view
from ledger.selectors import ledger_status


def registry_full(*, base_url: str) -> tuple[str, set[str]]:
    """Everything live on the registry page, for a socket that has just (re)connected."""
    devices = selectors.registry_devices()
    html = render_to_string(
        "director/partials/registry_live.html",
        {
            "devices": devices,
            "summary": selectors.registry_summary(devices),
            "pairing": pairing_view(base_url=base_url),
            "ledger": ledger_status(),
            "coverage": build_coverage_map(devices),
            "oob": True,
        },
    )
    return html, {str(d.pk) for d in devices}


def device_cards(*, device_ids: Iterable[str], known: set[str]) -> tuple[str, set[str]]:
    """Cards for the given devices: replaced where the page has them, appended where not,
    deleted where the device is gone. Returns the fragments and the ids now on the page."""
    wanted = set(device_ids)
    devices = {str(d.pk): d for d in selectors.card_devices(wanted)}
    parts = []
    now_known = set(known)
    for device_id in sorted(wanted):
        device = devices.get(device_id)
        if device is None:
            parts.append(f'<div id="{dom.device_card_id(device_id)}" hx-swap-oob="delete"></div>')
            now_known.discard(device_id)
            continue
        if device_id in known:
            parts.append(
                render_to_string(
                    "director/partials/device_card.html", {"device": device, "oob": "true"}
                )
            )
        else:
            # htmx inserts the *children* of a beforeend out-of-band element, so the new card
            # travels inside a wrapper and arrives whole, id and all.
            card = render_to_string("director/partials/device_card.html", {"device": device})
            parts.append(f'<div hx-swap-oob="beforeend:#{dom.DEVICE_CARDS}">{card}</div>')
        now_known.add(device_id)
    all_devices = selectors.registry_devices()
    parts.append(
        render_to_string(
            "director/partials/registry_summary.html",
            {"summary": selectors.registry_summary(all_devices), "oob": True},
        )
    )
    return "".join(parts), now_known


def pairing_panel(*, base_url: str) -> str:
    return render_to_string(
        "director/partials/pairing_panel.html",
        {"pairing": pairing_view(base_url=base_url), "oob": True},
    )


def ledger_chip() -> str:
    return render_to_string(
        "director/partials/ledger_chip.html", {"ledger": ledger_status(), "oob": "true"}
    )


def coverage_map(*, oob: bool) -> str:
    return render_to_string(
        "director/partials/coverage_map.html",
        {"coverage": current_coverage_map(), "oob": "true" if oob else ""},
    )
