"""Running the beat analysis, off every request.

- Scaled mode (Redis): the upload's commit queues the Celery task `director.tasks.music_analyse`;
  beat sweeps every 30 s for tracks left waiting (a lost message, a worker that died).
- Embedded default: the commit sets `ANALYSIS_WANTED`; the server's ticker
  (`director/ticker.py`) then runs `music_analysis_dispatch`, which hands due tracks to a
  thread of their own here. The ticker's jobs run on the thread Channels gives all database
  work, which must not wait out an analysis.

Either way `music_analysis_run` claims the track (so it is analysed once), runs
`python -m director.music.analysis` in a child process (librosa's numba compilation holds the
GIL for seconds; a crash in a decoder takes only the child with it), turns its progress lines
into `music_analysis_progress`, and ends in `music_analysis_complete` or `music_analysis_fail`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import close_old_connections, connection
from django.db.models import Q
from django.utils import timezone

from director.models import MusicTrack
from director.music import services
from director.music.analysis import BeatGrid

logger = logging.getLogger(__name__)

# Set on commit of an upload (embedded mode); the ticker runs the dispatch at once.
ANALYSIS_WANTED = threading.Event()
# Tracks waiting longer than this are picked up by the sweep (scaled mode).
SWEEP_AFTER_S = 30.0
PROGRESS_STEP = 0.05

_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="music-analysis")
_in_flight: set[UUID] = set()
_in_flight_lock = threading.Lock()


class AnalysisFailed(Exception):
    pass


def music_analysis_request(*, track_id: UUID) -> None:
    """Ask for a track's analysis soon. Registered on commit by the services; never analyses
    on the caller's thread."""
    if settings.CELERY_TASK_ALWAYS_EAGER:
        # Embedded default: an eager task would run right here, in the request.
        ANALYSIS_WANTED.set()
        return
    from director.tasks import music_analyse

    music_analyse.delay(str(track_id))


def tracks_due(*, older_than_s: float = 0.0) -> list[UUID]:
    """Tracks waiting for their analysis, and those whose analysis outlived its lease."""
    now = timezone.now()
    stale = now - timedelta(seconds=services.ANALYSIS_LEASE_S)
    state = MusicTrack.AnalysisState
    due = MusicTrack.objects.filter(
        Q(analysis_state=state.PENDING, uploaded_at__lte=now - timedelta(seconds=older_than_s))
        | Q(analysis_state=state.ANALYSING, analysis_started_at__lt=stale)
    ).order_by("uploaded_at")
    return list(due.values_list("pk", flat=True))


def music_analysis_dispatch() -> int:
    """The embedded ticker's job: hand every due track to the analysis thread (once)."""
    queued = 0
    for track_id in tracks_due():
        with _in_flight_lock:
            if track_id in _in_flight:
                continue
            _in_flight.add(track_id)
        _executor.submit(_run_in_thread, track_id)
        queued += 1
    return queued


def _run_in_thread(track_id: UUID) -> None:
    try:
        close_old_connections()
        music_analysis_run(track_id=track_id)
    except Exception:
        logger.exception("the analysis of music track %s failed", track_id)
    finally:
        with _in_flight_lock:
            _in_flight.discard(track_id)
        connection.close()


def music_analysis_run(*, track_id: UUID) -> MusicTrack | None:
    """Claim, analyse in a child process, store the grid or the failure. None: not due."""
    track = services.music_analysis_claim(track_id=track_id)
    if track is None:
        return None
    last = [0.0]

    def progress(fraction: float) -> None:
        if fraction - last[0] >= PROGRESS_STEP:
            last[0] = fraction
            services.music_analysis_progress(track_id=track_id, progress=fraction)

    try:
        with local_copy(track.file.name) as path:
            grid = analyse_in_child(path, progress=progress)
    except AnalysisFailed as exc:
        return services.music_analysis_fail(track_id=track_id, error=str(exc))
    return services.music_analysis_complete(track_id=track_id, grid=grid)


@contextlib.contextmanager
def local_copy(name: str) -> Iterator[str]:
    """A local path to the stored file: the file itself on a local storage, else a temporary
    copy (S3)."""
    if not name or not default_storage.exists(name):
        raise AnalysisFailed("The track's file is missing from the storage.")
    try:
        path = default_storage.path(name)
    except NotImplementedError:
        path = None
    if path is not None:
        yield path
        return
    suffix = Path(name).suffix
    with (
        tempfile.NamedTemporaryFile(suffix=suffix) as copy,
        default_storage.open(name, "rb") as source,
    ):
        shutil.copyfileobj(source, copy, 1024 * 1024)
        copy.flush()
        yield copy.name


def analyse_in_child(path: str, *, progress: Callable[[float], None]) -> BeatGrid:
    """`python -m director.music.analysis PATH`, read line by line, within the timeout."""
    timeout = settings.MOTIONMIX_MUSIC_ANALYSIS_TIMEOUT_S
    env = {
        **os.environ,
        # librosa's numba functions compile once and are kept here, not per run.
        "NUMBA_CACHE_DIR": os.environ.get("NUMBA_CACHE_DIR")
        or str(Path(settings.VAR_DIR) / "numba-cache"),
        "PYTHONUNBUFFERED": "1",
    }
    timed_out = threading.Event()
    # stderr goes to a file: a chatty library must not fill a pipe nobody reads yet.
    with tempfile.TemporaryFile(mode="w+") as errors:
        proc = subprocess.Popen(  # noqa: S603 - our own module, a path we made
            [sys.executable, "-m", "director.music.analysis", path],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )

        def stop() -> None:
            timed_out.set()
            proc.kill()

        timer = threading.Timer(timeout, stop)
        timer.start()
        outcome: dict[str, Any] = {}
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                try:
                    message = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a library printing to stdout
                if not isinstance(message, dict):
                    continue
                if "progress" in message:
                    progress(float(message["progress"]))
                elif "result" in message or "error" in message:
                    outcome = message
            code = proc.wait()
        finally:
            timer.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        errors.seek(0)
        stderr = errors.read()
    if "result" in outcome:
        return BeatGrid(**outcome["result"])
    if "error" in outcome:
        raise AnalysisFailed(str(outcome["error"]))
    if timed_out.is_set():
        raise AnalysisFailed(f"The analysis took longer than {timeout:.0f} s and was stopped.")
    tail = stderr.strip().splitlines()[-1:] or [f"exit status {code}"]
    raise AnalysisFailed(f"The analysis stopped without a result: {tail[0][:300]}")
