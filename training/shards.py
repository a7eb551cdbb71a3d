"""Shards: `.npz` files written so that the same windows always give the same bytes.

`numpy.savez_compressed` stamps each member with the current time; these shards are zip files
written member by member with a fixed time (1980-01-01), fixed permissions, DEFLATE at level 6
and the members in a fixed order, each a `.npy` written by `numpy.lib.format.write_array`.
`numpy.load` reads them as any `.npz`.

Each shard holds up to `shard_windows` windows of one split, in build order (pairs sorted by
id, windows by index). Arrays, `N` windows of `W` frames:

| name | shape, dtype | meaning |
|---|---|---|
| `window_id` | (N,) str | `<pair id>/w00012` |
| `pair_index` | (N,) int32 | index into the manifest's `pairs` |
| `window_index` | (N,) int32 | the window's index within its pair |
| `start_frame` | (N,) int64 | the window's first frame on its audio track's 30 fps grid |
| `dims` | (N,) int8 | 3: mocap in metres; 2: image keypoints |
| `audio` | (N, W, 35) float32 | the audio features (`training.audio_features`) |
| `positions` | (N, W, 17, 3) float32 | normalised COCO-17 joints (`training.motion_features`) |
| `velocities` | (N, W, 17, 3) float32 | their velocities, per second |
| `kinetic` | (N, W) float32 | kinetic energy per frame |
| `conf` | (N, W, 17) float32 | joint confidence, 0 where missing |
| `missing` | (N, W) bool | no pose in that frame |
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ZIP_TIME = (1980, 1, 1, 0, 0, 0)
COMPRESS_LEVEL = 6
ARRAYS = (
    "window_id",
    "pair_index",
    "window_index",
    "start_frame",
    "dims",
    "audio",
    "positions",
    "velocities",
    "kinetic",
    "conf",
    "missing",
)
DTYPES = {
    "pair_index": np.int32,
    "window_index": np.int32,
    "start_frame": np.int64,
    "dims": np.int8,
    "audio": np.float32,
    "positions": np.float32,
    "velocities": np.float32,
    "kinetic": np.float32,
    "conf": np.float32,
    "missing": np.bool_,
}


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write `arrays` (in ARRAYS order) as a byte-reproducible `.npz` at `path`."""
    with zipfile.ZipFile(path, "w", allowZip64=True) as archive:
        for name in ARRAYS:
            buffer = io.BytesIO()
            np.lib.format.write_array(
                buffer, np.ascontiguousarray(arrays[name]), allow_pickle=False
            )
            info = zipfile.ZipInfo(f"{name}.npy", date_time=ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            info.create_system = 3
            archive.writestr(info, buffer.getvalue(), compresslevel=COMPRESS_LEVEL)


@dataclass
class ShardInfo:
    name: str
    split: str
    windows: int


class ShardWriter:
    """Collects one split's windows and writes a shard every `shard_windows` of them."""

    def __init__(self, out_dir: Path, split: str, shard_windows: int) -> None:
        self.out_dir = out_dir
        self.split = split
        self.shard_windows = shard_windows
        self.written: list[ShardInfo] = []
        self._rows: list[dict[str, np.ndarray | str | int]] = []

    def add(self, row: dict[str, np.ndarray | str | int]) -> None:
        self._rows.append(row)
        if len(self._rows) >= self.shard_windows:
            self.flush()

    def flush(self) -> None:
        if not self._rows:
            return
        name = f"{self.split}-{len(self.written):05d}.npz"
        arrays = {"window_id": np.array([str(row["window_id"]) for row in self._rows])}
        for key, dtype in DTYPES.items():
            arrays[key] = np.stack([np.asarray(row[key], dtype=dtype) for row in self._rows])
        write_npz(self.out_dir / name, arrays)
        self.written.append(ShardInfo(name=name, split=self.split, windows=len(self._rows)))
        self._rows = []
