"""The manifest: what went in, what came out, how, and the ids that name it.

- `dataset_id`: sha256 over the dataset's content: the lines `"<sha256>  <name>\\n"` of
  `config.json` and every shard, sorted by name (what `sha256sum` prints). Two datasets with
  the same id hold the same windows, made with the same settings.
- `run_id`: sha256 over the run's recipe: the inputs' hashes (in the order given), the config
  and the versions of the toolchain. A rebuild with the same recipe has the same run id, and
  because a build is deterministic, the same dataset id; a different dataset id under one run
  id means the toolchain behaved differently, which `report` shows.
- `checksums.sha256` lists every other file of the dataset, the manifest included
  (`sha256sum -c checksums.sha256` verifies it).

Nothing in the output says when, where or by whom it was built, so a rebuild is byte-identical.
"""

from __future__ import annotations

import hashlib
import json
import platform
import zlib
from pathlib import Path
from typing import Any

import av
import librosa
import numpy as np
import scipy

from training.audio import sha256_file
from training.jsonfile import read_json_object
from training.timeline import InputError

FORMAT = "motionmix.training-dataset"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CONFIG = "config.json"
CHECKSUMS = "checksums.sha256"


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, indent=1, ensure_ascii=False, allow_nan=False) + "\n"


def toolchain() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "librosa": librosa.__version__,
        "av": av.__version__,
        "ffmpeg": _ffmpeg_version(),
        "zlib": zlib.ZLIB_VERSION,
    }


def _ffmpeg_version() -> str:
    versions = getattr(av, "library_versions", {})
    codec = versions.get("libavcodec")
    return ".".join(str(part) for part in codec) if codec else "unknown"


def dataset_id(hashes: dict[str, str]) -> str:
    """The content hash over `config.json` and the shards (`hashes`: name → sha256)."""
    lines = "".join(f"{hashes[name]}  {name}\n" for name in sorted(hashes))
    return hashlib.sha256(lines.encode()).hexdigest()


def run_id(inputs: list[dict[str, Any]], config: dict[str, Any], tools: dict[str, str]) -> str:
    recipe = {
        "inputs": [[file["sha256"] for file in entry["files"]] for entry in inputs],
        "config": config,
        "toolchain": tools,
    }
    return hashlib.sha256(canonical_json(recipe).encode()).hexdigest()


def write_checksums(out_dir: Path) -> None:
    names = sorted(
        path.name for path in out_dir.iterdir() if path.is_file() and path.name != CHECKSUMS
    )
    lines = "".join(f"{sha256_file(out_dir / name)}  {name}\n" for name in names)
    (out_dir / CHECKSUMS).write_text(lines, encoding="utf-8")


def read_manifest(out_dir: Path) -> dict[str, Any]:
    path = out_dir / MANIFEST
    if not path.is_file():
        raise InputError(f"{out_dir}: no {MANIFEST}: not a dataset folder")
    manifest = read_json_object(path, "the manifest")
    if manifest.get("format") != FORMAT:
        raise InputError(f"{path}: not a MotionMix training dataset manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise InputError(
            f"{path}: format version {manifest.get('format_version')} is not supported "
            f"(this pipeline reads version {FORMAT_VERSION})"
        )
    return manifest
