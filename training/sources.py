"""What `build` is given, turned into pairs: one audio track and one motion stream on one clock.

Two kinds of input:

- **A session bundle** (a folder holding `session.json`, or its zip download): every take of
  music (one uninterrupted stretch of playback, from the cues) pairs with every camera that
  sent pose; the camera's clock segments put its frames on the server's clock and the cue puts
  the server's clock on the track's (`training.bundle`). The split source is the session.
- **A folder with a sidecar** `pairing.json` (or the path of such a JSON file itself):

  ```
  {"source": "cmu-salsa",                    split key; default: the folder's name
   "audio": "song.ogg",                       relative to the sidecar's folder
   "motion": [{"file": "60_10.bvh",           relative to the sidecar's folder
               "format": "bvh",               bvh | mediapipe | ndjson; default: by suffix
               "fps": 120,                    the file's frame rate; default: the file's own
               "offset_s": 0.0,               audio time of the motion's t = 0
               "name": "leader"}]}            default: the file's stem
  ```

  Motion time `t` (seconds from the file's first frame, or its own `t` field) lands at audio
  time `t + offset_s`. The split source is `source`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.bundle import read_bundle
from training.formats import read_motion
from training.jsonfile import read_json_object
from training.timeline import InputError, MotionSource

SIDECAR = "pairing.json"


@dataclass(frozen=True)
class Pair:
    pair_id: str  # unique in the build; sorts the dataset
    source: str  # the split key: a session or a folder's source
    audio_path: Path
    audio_start_s: float  # the part of the track this pair may use
    audio_end_s: float | None  # None: to the track's end
    motion: MotionSource
    shift_s: float  # audio time = motion time + shift_s
    alignment: dict[str, Any] = field(default_factory=dict)  # how the shift was found


@dataclass(frozen=True)
class Input:
    """One input as given on the command line, with the files it stands for."""

    given: str
    kind: str  # "bundle" | "folder"
    source: str
    files: list[tuple[str, Path]]  # (name in the manifest, path on disk)
    pairs: list[Pair]
    details: dict[str, Any] = field(default_factory=dict)


def read_input(given: str, cache_dir: Path) -> Input:
    path = Path(given)
    if not path.exists():
        raise InputError(f"{given}: no such file or folder")
    if path.is_file() and path.suffix.lower() == ".zip":
        return _bundle_input(given, path, cache_dir)
    if path.is_dir() and (path / "session.json").is_file():
        return _bundle_input(given, path, cache_dir)
    if path.is_dir() and (path / SIDECAR).is_file():
        return _folder_input(given, path / SIDECAR)
    if path.is_file() and path.suffix.lower() == ".json":
        return _folder_input(given, path)
    raise InputError(
        f"{given}: not an input: expected a session bundle (a folder with session.json, "
        f"or its .zip) or a folder with {SIDECAR}"
    )


def _bundle_input(given: str, path: Path, cache_dir: Path) -> Input:
    bundle = read_bundle(path, cache_dir)
    source = f"session-{bundle.session_id}"
    pairs = []
    for take_no, take in enumerate(bundle.takes):
        for motion in bundle.motion:
            clock = bundle.clock_report.get(motion.name, {})
            pairs.append(
                Pair(
                    pair_id=f"{source}/take{take_no:03d}/{motion.name}",
                    source=source,
                    audio_path=take.audio_path,
                    audio_start_s=take.track_start_s,
                    audio_end_s=take.track_end_s,
                    motion=motion,
                    shift_s=take.shift_s,
                    alignment={
                        "method": "bundle clocks and music cues",
                        "track_id": take.track_id,
                        "server_start_s": take.server_start_s,
                        "clock": clock,
                    },
                )
            )
    return Input(
        given=given,
        kind="bundle",
        source=source,
        files=list(bundle.files),
        pairs=pairs,
        details={"session": bundle.session_id, "name": bundle.session_name},
    )


def _folder_input(given: str, sidecar: Path) -> Input:
    spec = read_json_object(sidecar, "the sidecar")
    folder = sidecar.parent
    source = _text(spec, "source", sidecar, default=folder.resolve().name)
    audio_path = folder / _text(spec, "audio", sidecar)
    if not audio_path.is_file():
        raise InputError(f"{sidecar}: audio file {audio_path} not found")
    motions = spec.get("motion")
    if not isinstance(motions, list) or not motions:
        raise InputError(f"{sidecar}: 'motion' must be a non-empty list")
    files = [(SIDECAR, sidecar), (str(spec["audio"]), audio_path)]
    pairs = []
    names: set[str] = set()
    for index, entry in enumerate(motions):
        where = f"{sidecar}: motion[{index}]"
        if not isinstance(entry, dict):
            raise InputError(f"{where} must be an object")
        motion_path = folder / _text(entry, "file", sidecar)
        if not motion_path.is_file():
            raise InputError(f"{where}: motion file {motion_path} not found")
        name = _text(entry, "name", sidecar, default=_stem(motion_path))
        if name in names:
            raise InputError(f"{where}: two motion files are named {name!r}")
        names.add(name)
        fmt = entry.get("format")
        if fmt is not None and not isinstance(fmt, str):
            raise InputError(f"{where}: format must be a string")
        fps = _number(entry, "fps", where, default=None)
        offset = _number(entry, "offset_s", where, default=0.0)
        motion = read_motion(motion_path, format=fmt, fps=fps, name=name)
        files.append((str(entry["file"]), motion_path))
        pairs.append(
            Pair(
                pair_id=f"{source}/{name}",
                source=source,
                audio_path=audio_path,
                audio_start_s=0.0,
                audio_end_s=None,
                motion=motion,
                shift_s=float(offset or 0.0),
                alignment={"method": "sidecar offset", "offset_s": offset},
            )
        )
    return Input(given=given, kind="folder", source=source, files=files, pairs=pairs)


def _text(spec: dict[str, Any], key: str, sidecar: Path, default: str | None = None) -> str:
    value = spec.get(key, default)
    if not isinstance(value, str) or not value:
        raise InputError(f"{sidecar}: {key!r} must be a non-empty string")
    return value


def _number(spec: dict[str, Any], key: str, where: str, default: float | None) -> float | None:
    value = spec.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InputError(f"{where}: {key} must be a number")
    return float(value)


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".json.gz", ".ndjson", ".jsonl", ".json", ".bvh", ".gz"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem
