"""The optional alignment check: how far a motion curve lags a reference on the 30 fps grid.

The clocks (bundle segments, music cues, a sidecar's offset) decide the pairing. This module
only measures: the lag at which a motion speed curve best matches the music's onset envelope,
or another dancer's speed curve, with a confidence. A caller reports it, and applies it only
when told to; nothing here changes a pairing by itself.

Lag convention: a positive `lag_frames` means the second curve comes later, i.e.
`second[k + lag] ≈ first[k]`. To shift the motion onto the music, subtract `lag_s` from motion
time.

Each curve is first high-passed: its mean over the valid frames of a centred 1 s window
(`DETREND_FRAMES`) is subtracted, so a slow common trend (a dancer warming up, a louder
chorus) does not lift every lag alike. No derivative is taken: an onset envelope is already a
rectified derivative of the sound, and a speed curve one of the pose. Each lag's score is then
the Pearson correlation over the frames where both curves are valid (both z-scored over
exactly those frames), so a lag is not favoured by a larger overlap or by missing frames. A
dancer whose speed *dips* on the beat is found by passing `-speed`.

Confidence in [0, 1] is the product of three factors:

- prominence: how far the peak stands above the other lags, `(peak − median) / (1.4826 MAD)`
  of the lags more than `EXCLUDE` frames from the peak, mapped by `1 − exp(−max(0, z − 3)/3)`
  (a white-noise maximum over a few dozen lags is z ≈ 2.5: confidence 0);
- uniqueness: `1 − second_peak_ratio` scaled so a second peak at half the height or less
  costs nothing, and one as high as the peak leaves 0 (a periodic beat makes neighbours
  one beat away; only a clearly higher peak wins);
- support: `min(1, n_frames / FULL_SUPPORT)`, fewer than `MIN_OVERLAP` valid pairs give 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import uniform_filter1d

from training.timeline import FPS

DETREND_FRAMES = FPS + 1  # centred window whose local mean is removed (1 s)
EXCLUDE = 2  # frames either side of the peak left out of its neighbours' statistics
MIN_OVERLAP = 60  # valid frame pairs a lag needs to be scored at all (2 s)
FULL_SUPPORT = 600  # valid frame pairs for full support (20 s)


@dataclass(frozen=True)
class LagEstimate:
    lag_frames: int  # integer lag of the peak (second curve later when positive)
    lag_s: float  # the lag refined between frames by a parabola through the peak, seconds
    peak: float  # the correlation at `lag_frames`
    confidence: float  # 0 (no evidence) … 1 (a single, prominent, well supported peak)
    second_peak_ratio: float  # the highest other local maximum over the peak (≤ 1)
    n_frames: int  # valid frame pairs at the peak's lag


def correlation_by_lag(
    first: np.ndarray,
    second: np.ndarray,
    valid_first: np.ndarray,
    valid_second: np.ndarray,
    max_lag_frames: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lags, Pearson r per lag (NaN where fewer than MIN_OVERLAP pairs), pairs per lag)."""
    a = np.asarray(first, dtype=np.float64)
    b = np.asarray(second, dtype=np.float64)
    ok_a = np.asarray(valid_first, dtype=bool) & np.isfinite(a)
    ok_b = np.asarray(valid_second, dtype=bool) & np.isfinite(b)
    a, b = _detrend(a, ok_a), _detrend(b, ok_b)
    lags = np.arange(-max_lag_frames, max_lag_frames + 1)
    scores = np.full(lags.shape, np.nan)
    pairs = np.zeros(lags.shape, dtype=np.int64)
    for i, lag in enumerate(lags):
        lo, hi = max(0, -lag), min(a.size, b.size - lag)
        if hi - lo < MIN_OVERLAP:
            continue
        mask = ok_a[lo:hi] & ok_b[lo + lag : hi + lag]
        pairs[i] = int(mask.sum())
        if pairs[i] >= MIN_OVERLAP:
            scores[i] = _pearson(a[lo:hi][mask], b[lo + lag : hi + lag][mask])
    return lags, scores, pairs


def _detrend(x: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """`x` minus its mean over the valid frames of a centred DETREND_FRAMES window."""
    values = np.where(ok, x, 0.0)
    total = uniform_filter1d(values, DETREND_FRAMES, mode="constant")
    count = uniform_filter1d(ok.astype(np.float64), DETREND_FRAMES, mode="constant")
    return np.where(ok, values - total / np.maximum(count, 1e-12), 0.0)


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    x = x - x.mean()
    y = y - y.mean()
    norm = np.sqrt(np.sum(x * x) * np.sum(y * y))
    return float(np.sum(x * y) / norm) if norm > 0 else 0.0


def xcorr_lag(
    audio_onset: np.ndarray,
    motion_speed: np.ndarray,
    valid: np.ndarray,
    max_lag_frames: int,
    *,
    reference_valid: np.ndarray | None = None,
) -> LagEstimate:
    """The lag of `motion_speed` (valid where `valid`) behind `audio_onset`, both on the 30 fps
    grid. For motion against motion, pass the first dancer's speed as `audio_onset` and its
    validity as `reference_valid`."""
    ref_ok = np.ones(len(audio_onset), bool) if reference_valid is None else reference_valid
    lags, scores, pairs = correlation_by_lag(
        audio_onset, motion_speed, ref_ok, valid, max_lag_frames
    )
    if not np.isfinite(scores).any():
        return LagEstimate(0, 0.0, 0.0, 0.0, 1.0, 0)
    filled = np.where(np.isfinite(scores), scores, -np.inf)
    best = int(np.argmax(filled))  # the first of equal maxima: deterministic
    peak = float(scores[best])
    second = _second_peak(filled, best)
    ratio = 1.0 if peak <= 0 else float(min(1.0, max(0.0, second / peak)))
    confidence = _prominence(scores, best) * _uniqueness(ratio) * _support(int(pairs[best]))
    return LagEstimate(
        lag_frames=int(lags[best]),
        lag_s=(float(lags[best]) + _parabola(filled, best)) / FPS,
        peak=peak,
        confidence=float(confidence) if peak > 0 else 0.0,
        second_peak_ratio=ratio,
        n_frames=int(pairs[best]),
    )


def _second_peak(filled: np.ndarray, best: int) -> float:
    """The highest local maximum more than EXCLUDE lags from the peak (or −inf)."""
    inner = filled[1:-1]
    is_max = (inner >= filled[:-2]) & (inner >= filled[2:]) & np.isfinite(inner)
    index = np.flatnonzero(is_max) + 1
    index = index[np.abs(index - best) > EXCLUDE]
    return float(filled[index].max()) if index.size else -np.inf


def _parabola(filled: np.ndarray, best: int) -> float:
    """Sub-frame offset of the vertex through the peak and its neighbours, in [−0.5, 0.5]."""
    if best == 0 or best == filled.size - 1:
        return 0.0
    left, mid, right = filled[best - 1], filled[best], filled[best + 1]
    curve = left - 2 * mid + right
    if not (np.isfinite(left) and np.isfinite(right)) or curve >= 0:
        return 0.0
    return float(np.clip(0.5 * (left - right) / curve, -0.5, 0.5))


def _prominence(scores: np.ndarray, best: int) -> float:
    index = np.arange(scores.size)
    others = scores[(np.abs(index - best) > EXCLUDE) & np.isfinite(scores)]
    if others.size < 5:
        return 0.0
    median = float(np.median(others))
    spread = 1.4826 * float(np.median(np.abs(others - median)))
    z = (float(scores[best]) - median) / spread if spread > 0 else 0.0
    return 1.0 - float(np.exp(-max(0.0, z - 3.0) / 3.0))


def _uniqueness(ratio: float) -> float:
    return float(np.clip((1.0 - ratio) / 0.5, 0.0, 1.0))


def _support(pairs: int) -> float:
    return 0.0 if pairs < MIN_OVERLAP else min(1.0, pairs / FULL_SUPPORT)
