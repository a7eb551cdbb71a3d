"""Reads for the Preflight page."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest

from director.models import PreflightRun
from director.preflight.runner import SECTIONS


def preflight_staff_check(request: HttpRequest) -> None:
    """Preflight creates a login, a camera and a session: staff only."""
    if not request.user.is_staff:
        raise PermissionDenied("Preflight is for staff.")


def preflight_latest() -> PreflightRun | None:
    return PreflightRun.objects.order_by("-requested_at").first()


def preflight_panel_context(run: PreflightRun | None) -> dict[str, Any]:
    """The run and its results by section, in the runner's order."""
    results = list(run.results) if run is not None else []
    sections = []
    for name in SECTIONS:
        checks = [r for r in results if r.get("section") == name]
        if checks:
            failed = any(r.get("status") == "fail" for r in checks)
            sections.append({"name": name, "checks": checks, "failed": failed})
    counts = {s: sum(1 for r in results if r.get("status") == s) for s in ("pass", "fail", "skip")}
    return {"run": run, "sections": sections, "counts": counts}
