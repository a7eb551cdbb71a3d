"""Windows over a pair, and the train/validation split.

A pair of `L` frames at 30 fps gives windows of `W = window_s × 30` frames starting every
`S = stride_s × 30` frames: exactly ⌊(L − W) / S⌋ + 1 of them when `L ≥ W`, none otherwise;
window `i` covers frames `[i·S, i·S + W)`. A window is dropped (and counted) when more than
`max_missing_fraction` of its frames have no pose.

The split is by source (a session, or a folder's `source`), never inside one. Rule: rank the
sources by `sha256("motionmix-split:<seed>:<source>")` (hex, ascending); the first
`n_val = round(val_fraction × n)` go to validation, at least one when there are two or more
sources and `val_fraction > 0`, and never all of them. A lone source is all training data.
The rule depends only on the seed and the source's name, so adding a source elsewhere never
moves another one unless it changes `n_val`.
"""

from __future__ import annotations

import hashlib


def window_count(length: int, window: int, stride: int) -> int:
    """⌊(L − W) / S⌋ + 1 windows, or 0 when the pair is shorter than one window."""
    if length < window:
        return 0
    return (length - window) // stride + 1


def window_starts(length: int, window: int, stride: int) -> range:
    return range(0, window_count(length, window, stride) * stride, stride)


def window_id(pair_id: str, index: int) -> str:
    """`<pair id>/w00012`: indices zero-padded to 5 digits (6+ only past 99,999 windows)."""
    return f"{pair_id}/w{index:05d}"


def split_rank(source: str, seed: int) -> str:
    return hashlib.sha256(f"motionmix-split:{seed}:{source}".encode()).hexdigest()


def assign_splits(sources: list[str], val_fraction: float, seed: int) -> dict[str, str]:
    """Each source → "train" or "val" by the rule in the module's docstring."""
    unique = sorted(set(sources), key=lambda source: (split_rank(source, seed), source))
    n_val = 0
    if len(unique) >= 2 and val_fraction > 0:
        n_val = min(len(unique) - 1, max(1, round(val_fraction * len(unique))))
    return {source: ("val" if rank < n_val else "train") for rank, source in enumerate(unique)}
