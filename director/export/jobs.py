"""The background half of a zipped export: write the bundle, zip it, keep it under MEDIA_ROOT.

The bundle is written to a scratch folder under `MEDIA_ROOT/exports/.work/` (so the zip is
built on the same disk), zipped to `MEDIA_ROOT/exports/<session id>/<export id>.zip` and the
scratch folder removed. Progress is written at most every `PROGRESS_EVERY_S`, which is also the
job's heartbeat; the session page polls it.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path
from uuid import UUID

from django.conf import settings

from director.export.archive import zip_bundle
from director.export.bundle import ExportRefused, export_session, file_sha256
from director.export.services import (
    session_export_begin,
    session_export_fail,
    session_export_finish,
    session_export_progress,
)
from director.models import SessionExport

logger = logging.getLogger(__name__)

PROGRESS_EVERY_S = 0.5
# The bundle is most of the work; zipping (deflate) the rest.
BUNDLE_SHARE = 0.7


class _Interrupted(Exception):
    pass


class _Reporter:
    def __init__(self, export_id: UUID) -> None:
        self.export_id = export_id
        self.last = 0.0

    def __call__(self, stage: str, fraction: float, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < PROGRESS_EVERY_S:
            return
        self.last = now
        if not session_export_progress(export_id=self.export_id, stage=stage, progress=fraction):
            raise _Interrupted


def exports_root() -> Path:
    return Path(settings.MEDIA_ROOT) / "exports"


def zip_name(export: SessionExport) -> str:
    """The download's file name: the session's name made safe, and its id's start."""
    safe = "".join(c if c.isalnum() else "-" for c in export.session.name.lower()).strip("-")
    safe = "-".join(part for part in safe.split("-") if part)[:40] or "session"
    return f"motionmix-{safe}-{str(export.session_id)[:8]}.zip"


def session_export_run(*, export_id: UUID) -> SessionExport | None:
    """Run one queued export to the end (done or failed). None if it was not queued."""
    export = session_export_begin(export_id=export_id)
    if export is None:
        return None
    report = _Reporter(export.pk)
    work_root = exports_root() / ".work"
    work_root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f"{export.pk}-", dir=work_root))
    try:
        result = export_session(
            session_id=export.session_id,
            out_dir=scratch / "bundle",
            copy_stills=export.copy_stills,
            progress=lambda stage, f: report(f"Writing {stage}", BUNDLE_SHARE * f),
        )
        report("Zipping", BUNDLE_SHARE, force=True)
        relative = f"exports/{export.session_id}/{export.pk}.zip"
        target = Path(settings.MEDIA_ROOT) / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        size = zip_bundle(
            result.path,
            target,
            top=f"motionmix-session-{export.session_id}",
            progress=lambda f: report("Zipping", BUNDLE_SHARE + (1 - BUNDLE_SHARE) * f),
        )
        return session_export_finish(
            export_id=export.pk,
            file=relative,
            size_bytes=size,
            sha256=file_sha256(target),
            summary={
                "files": len(result.files),
                "bundle_bytes": result.bytes,
                "events": result.events,
                "pose_frames": result.pose_frames,
                "stills": result.stills,
            },
        )
    except _Interrupted:
        logger.warning("export %s was marked failed while it ran; stopped", export.pk)
        return SessionExport.objects.get(pk=export.pk)
    except ExportRefused as exc:
        return session_export_fail(export_id=export.pk, error=str(exc))
    except Exception as exc:
        logger.exception("export %s failed", export.pk)
        return session_export_fail(
            export_id=export.pk, error=f"The export failed: {type(exc).__name__}: {exc}"
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def session_exports_run_queued() -> int:
    """Run every queued export, oldest first (the embedded mode's ticker job)."""
    ran = 0
    for pk in list(
        SessionExport.objects.filter(state=SessionExport.State.QUEUED)
        .order_by("requested_at")
        .values_list("pk", flat=True)
    ):
        if session_export_run(export_id=pk) is not None:
            ran += 1
    return ran
