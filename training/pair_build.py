"""One pair, from its motion stream and its audio features to windows and metrics.

1. The motion is resampled onto the audio's 30 fps grid over the part of the track the pair
   may use (`training.resample`), block by block into memory-mapped scratch files, so an hour
   of pose never sits in memory.
2. The pair is trimmed to its first and last frame with pose: music with no dancer in view is
   not a pair.
3. The motion speed (mean joint speed, the source's own units) is measured per frame; with
   the onset envelope it gives the cross-correlation check (`training.align`) and the motion
   beats (`training.metrics`).
4. The windows (`training.windows`): too much missing pose drops one; the others get their
   motion features (`training.motion_features`) and audio features and go to their split's
   shards.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from training.align import xcorr_lag
from training.audio_features import AudioFeatures
from training.config import BuildConfig
from training.metrics import bas_chance, beat_align_scores, motion_beats, tempo_agreement
from training.motion_features import motion_features
from training.resample import resample
from training.shards import ShardWriter
from training.sources import Pair
from training.timeline import FPS, JOINTS
from training.windows import window_count, window_id, window_starts


@dataclass
class Resampled:
    first: int  # grid frame of row 0
    joints: np.ndarray  # (n, 17, 3) float32 memmap
    conf: np.ndarray  # (n, 17) float32 memmap
    missing: np.ndarray  # (n,) bool memmap


def build_pair(
    pair: Pair,
    pair_index: int,
    features: AudioFeatures,
    writer: ShardWriter,
    config: BuildConfig,
    work_dir: Path,
    progress: Callable[[float], None] | None = None,
) -> dict[str, Any]:
    """Write the pair's kept windows to `writer`; return its manifest entry. `progress` gets
    the fraction of the pair's grid resampled so far."""
    n_grid = int(features.features.shape[0])
    first = max(0, math.ceil(pair.audio_start_s * FPS - 1e-6))
    end = n_grid if pair.audio_end_s is None else min(n_grid, int(pair.audio_end_s * FPS) + 1)
    entry: dict[str, Any] = {
        "pair_id": pair.pair_id,
        "source": pair.source,
        "split": writer.split,
        "motion": {"name": pair.motion.name, "format": pair.motion.format},
        "motion_fps": pair.motion.fps,
        "dims": pair.motion.dims,
        "shift_s": round(pair.shift_s, 9),
        "alignment": pair.alignment,
    }
    grid = _resample(pair, pair.shift_s, first, max(0, end - first), config, work_dir, progress)
    refine = _refine(grid, features, config)
    if refine is not None:
        entry["refine"] = refine
        if refine.get("applied"):
            shift = pair.shift_s - refine["lag_s"]  # the motion came lag_s late
            entry["shift_s"] = round(shift, 9)
            moved = replace(pair, shift_s=shift)
            grid = _resample(moved, shift, first, end - first, config, work_dir, progress)
    present = np.flatnonzero(~grid.missing)
    if present.size == 0:
        entry.update(frames=0, first_frame=None, missing_frames=0, windows=_counts(0, 0))
        entry["note"] = "no pose inside the audio"
        return entry
    lo, hi = int(present[0]), int(present[-1]) + 1
    length = hi - lo
    missing = np.asarray(grid.missing[lo:hi])
    entry.update(
        first_frame=grid.first + lo,
        frames=length,
        seconds=round(length / FPS, 6),
        missing_frames=int(missing.sum()),
    )
    kept, dropped = _windows(pair, pair_index, grid, lo, length, features, writer, config)
    entry["windows"] = _counts(kept, dropped)
    speed, valid = _speed(grid, lo, hi)
    entry["metrics"] = _metrics(features, grid.first + lo, length, speed, valid, config)
    return entry


def _counts(kept: int, dropped: int) -> dict[str, int]:
    return {"total": kept + dropped, "kept": kept, "dropped": dropped}


def _resample(
    pair: Pair,
    shift: float,
    first: int,
    count: int,
    config: BuildConfig,
    work_dir: Path,
    progress: Callable[[float], None] | None,
) -> Resampled:
    shape = (max(count, 1),)
    scratch = Path(tempfile.mkdtemp(prefix="grid-", dir=work_dir))
    joints = np.lib.format.open_memmap(
        scratch / "joints.npy", mode="w+", dtype=np.float32, shape=(*shape, JOINTS, 3)
    )
    conf = np.lib.format.open_memmap(
        scratch / "conf.npy", mode="w+", dtype=np.float32, shape=(*shape, JOINTS)
    )
    missing = np.lib.format.open_memmap(
        scratch / "missing.npy", mode="w+", dtype=np.bool_, shape=shape
    )
    missing[:] = True
    if count > 0:
        blocks = resample(
            pair.motion.chunks(),
            shift_s=shift,
            first_frame=first,
            n_frames=count,
            max_gap_s=config.max_gap_s,
        )
        for block in blocks:
            at = block.start - first
            joints[at : at + len(block)] = block.joints
            conf[at : at + len(block)] = block.conf
            missing[at : at + len(block)] = block.missing
            if progress is not None:
                progress((at + len(block)) / count)
    if count == 0:
        return Resampled(first, joints[:0], conf[:0], missing[:0])
    return Resampled(first, joints, conf, missing)


def _speed(grid: Resampled, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean joint speed per frame (central differences), and where it is defined."""
    speed = np.zeros(hi - lo, dtype=np.float32)
    valid = np.zeros(hi - lo, dtype=bool)
    step = 4096
    for start in range(lo, hi, step):
        a, b = max(lo, start - 1), min(hi, start + step + 1)
        joints = np.asarray(grid.joints[a:b], dtype=np.float64)
        miss = np.asarray(grid.missing[a:b])
        if b - a < 3:
            continue
        delta = np.linalg.norm(joints[2:] - joints[:-2], axis=2).mean(axis=1) * FPS / 2
        ok = ~(miss[2:] | miss[:-2] | miss[1:-1])
        centre = np.arange(a + 1, b - 1)
        keep = (centre >= start) & (centre < min(hi, start + step))
        speed[centre[keep] - lo] = delta[keep]
        valid[centre[keep] - lo] = ok[keep]
    return speed, valid


def _refine(grid: Resampled, features: AudioFeatures, config: BuildConfig) -> dict[str, Any] | None:
    if config.refine == "off" or len(grid.missing) == 0:
        return None
    present = np.flatnonzero(~grid.missing)
    if present.size < 2 * config.max_lag_frames + 2:
        return {"status": "too short to measure"}
    lo, hi = int(present[0]), int(present[-1]) + 1
    speed, valid = _speed(grid, lo, hi)
    onset = np.asarray(features.onset_env[grid.first + lo : grid.first + hi], dtype=np.float32)
    estimate = xcorr_lag(onset, speed, valid, config.max_lag_frames)
    result: dict[str, Any] = {
        "status": "measured",
        "lag_frames": int(estimate.lag_frames),
        "lag_s": round(float(estimate.lag_s), 6),
        "peak": round(float(estimate.peak), 6),
        "confidence": round(float(estimate.confidence), 6),
        "frames": int(estimate.n_frames),
    }
    confident = estimate.confidence >= config.refine_min_confidence
    result["applied"] = bool(config.refine == "apply" and confident and estimate.lag_frames != 0)
    return result


def _windows(
    pair: Pair,
    pair_index: int,
    grid: Resampled,
    lo: int,
    length: int,
    features: AudioFeatures,
    writer: ShardWriter,
    config: BuildConfig,
) -> tuple[int, int]:
    size, stride = config.window_frames, config.stride_frames
    kept = dropped = 0
    for index, start in enumerate(window_starts(length, size, stride)):
        a, b = lo + start, lo + start + size
        missing = np.asarray(grid.missing[a:b])
        if missing.mean() > config.max_missing_fraction:
            dropped += 1
            continue
        motion = motion_features(np.asarray(grid.joints[a:b]), missing, pair.motion.dims)
        audio_from = grid.first + a
        writer.add(
            {
                "window_id": window_id(pair.pair_id, index),
                "pair_index": pair_index,
                "window_index": index,
                "start_frame": audio_from,
                "dims": pair.motion.dims,
                "audio": np.asarray(features.features[audio_from : audio_from + size]),
                "positions": motion.positions,
                "velocities": motion.velocities,
                "kinetic": motion.kinetic,
                "conf": np.asarray(grid.conf[a:b]),
                "missing": missing,
            }
        )
        kept += 1
    assert kept + dropped == window_count(length, size, stride)
    return kept, dropped


def _metrics(
    features: AudioFeatures,
    first: int,
    length: int,
    speed: np.ndarray,
    valid: np.ndarray,
    config: BuildConfig,
) -> dict[str, Any]:
    beats = np.asarray(features.beat_frames, dtype=np.int64)
    beats = beats[(beats >= first) & (beats < first + length)] - first
    moves = motion_beats(speed, valid)
    scores = beat_align_scores(
        beats / FPS, np.asarray(moves, dtype=np.float64) / FPS, config.bas_sigma_s
    )
    tempo = tempo_agreement(beats, speed, valid)
    return {
        "music_beats": int(beats.size),
        "motion_beats": len(moves),
        "bas_fact": _round(scores.motion_to_music),
        "bas_fact_chance": _round(bas_chance(beats / FPS, config.bas_sigma_s)),
        "bas_bailando": _round(scores.music_to_motion),
        "bas_bailando_chance": _round(bas_chance(np.asarray(moves) / FPS, config.bas_sigma_s)),
        "bas_sigma_s": config.bas_sigma_s,
        "tempo": {
            "audio_bpm": _round(tempo.audio_bpm),
            "motion_bpm": _round(tempo.motion_bpm),
            "ratio": _round(tempo.ratio),
            "relative_error": _round(tempo.relative_error),
            "agrees": bool(tempo.agrees),
        },
    }


def _round(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), 6)
