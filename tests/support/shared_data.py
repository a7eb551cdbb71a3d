"""Where the real recordings for tests are (../shared/data/README.md): `MOTIONMIX_SHARED_DATA`
if set; else `shared/data` beside the checkout; else, for a clone of a local repository (a CI
checkout in a scratch folder), `shared/data` beside that repository. Tests that need a file
skip, naming where they looked, when it is absent."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _origin_dir() -> Path | None:
    try:
        url = subprocess.run(
            ["git", "-C", str(ROOT), "config", "--get", "remote.origin.url"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    url = url.removeprefix("file://")
    if not url or "://" in url:
        return None  # a remote: nothing of it lies beside it on this machine
    path = Path(url)
    return path if path.is_absolute() and path.is_dir() else None


def _find() -> Path:
    if os.environ.get("MOTIONMIX_SHARED_DATA"):
        return Path(os.environ["MOTIONMIX_SHARED_DATA"])
    beside = ROOT.parent / "shared" / "data"
    if beside.is_dir():
        return beside
    origin = _origin_dir()
    if origin is not None and (origin.parent / "shared" / "data").is_dir():
        return origin.parent / "shared" / "data"
    return beside


SHARED_DATA = _find()
