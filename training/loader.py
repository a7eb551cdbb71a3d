"""`training.load(DIR)`: the windows of a dataset as numpy arrays, shard by shard.

    dataset = training.load("data/salsa-v1", split="train")
    for window in dataset:
        window.audio        # (150, 35) float32
        window.positions    # (150, 17, 3) float32
        ...

Only one shard is open at a time, so a dataset larger than memory iterates fine.
`dataset.manifest` is the manifest; `verify=True` runs `training.verify` first and refuses a
dataset that does not verify.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.manifest import read_manifest
from training.timeline import InputError


@dataclass(frozen=True)
class Window:
    window_id: str
    split: str
    pair_id: str
    window_index: int
    start_frame: int  # on the pair's audio track, 30 fps
    dims: int
    audio: np.ndarray  # (W, 35) float32
    positions: np.ndarray  # (W, 17, 3) float32
    velocities: np.ndarray  # (W, 17, 3) float32
    kinetic: np.ndarray  # (W,) float32
    conf: np.ndarray  # (W, 17) float32
    missing: np.ndarray  # (W,) bool


class Dataset:
    def __init__(self, path: Path, split: str | None) -> None:
        self.path = path
        self.manifest = read_manifest(path)
        splits = self.manifest["splits"]
        if split is not None and split not in splits:
            raise InputError(f"{path}: no split {split!r} (splits: {', '.join(sorted(splits))})")
        self.splits = [split] if split is not None else sorted(splits)
        self.dataset_id: str = self.manifest["dataset_id"]

    def __len__(self) -> int:
        return sum(self.manifest["splits"][name]["windows"] for name in self.splits)

    def shards(self) -> Iterator[tuple[str, Path]]:
        for split in self.splits:
            for name in self.manifest["splits"][split]["shards"]:
                yield split, self.path / name

    def __iter__(self) -> Iterator[Window]:
        pairs = [pair["pair_id"] for pair in self.manifest["pairs"]]
        for split, shard_path in self.shards():
            with np.load(shard_path, allow_pickle=False) as shard:
                arrays = {key: shard[key] for key in shard.files}
            for row in range(arrays["window_id"].shape[0]):
                yield Window(
                    window_id=str(arrays["window_id"][row]),
                    split=split,
                    pair_id=pairs[int(arrays["pair_index"][row])],
                    window_index=int(arrays["window_index"][row]),
                    start_frame=int(arrays["start_frame"][row]),
                    dims=int(arrays["dims"][row]),
                    audio=arrays["audio"][row],
                    positions=arrays["positions"][row],
                    velocities=arrays["velocities"][row],
                    kinetic=arrays["kinetic"][row],
                    conf=arrays["conf"][row],
                    missing=arrays["missing"][row],
                )


def load(path: str | Path, split: str | None = None, *, verify: bool = False) -> Dataset:
    """The dataset at `path` (optionally one split), checked first when `verify` is set."""
    folder = Path(path)
    if verify:
        from training.verify import verify as run_verify

        result = run_verify(folder)
        if not result.ok:
            raise InputError(f"{folder}: does not verify: " + "; ".join(result.problems))
    return Dataset(folder, split)
