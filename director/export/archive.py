"""A bundle folder as a zip whose bytes depend only on the folder's contents."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable
from pathlib import Path

# Zip keeps MS-DOS times; the earliest it can hold stands for "no time" in every entry.
FIXED_TIME = (1980, 1, 1, 0, 0, 0)
CHUNK = 1 << 20


def zip_bundle(
    bundle: Path, target: Path, *, top: str, progress: Callable[[float], None] | None = None
) -> int:
    """Zip every file under `bundle` into `target` (written whole or not at all), each under
    `top/`, in path order, with fixed times and permissions. Returns the zip's size."""
    files = sorted(p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file())
    total = max(1, sum((bundle / name).stat().st_size for name in files))
    done = 0
    partial = target.with_name(f".{target.name}.partial")
    try:
        with zipfile.ZipFile(partial, "w") as archive:
            for name in files:
                info = zipfile.ZipInfo(f"{top}/{name}", date_time=FIXED_TIME)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.create_system = 3  # unix, so the permissions below are read as such
                info.external_attr = 0o100644 << 16
                with (
                    (bundle / name).open("rb") as source,
                    archive.open(info, "w", force_zip64=True) as entry,
                ):
                    while chunk := source.read(CHUNK):
                        entry.write(chunk)
                        done += len(chunk)
                        if progress is not None:
                            progress(done / total)
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return target.stat().st_size
