"""The report's dance-to-music metrics, on the 30 fps grid: motion beats, Beat Align Score in
both directions, and tempo agreement. Deterministic numpy/scipy only.

- A **motion beat** is a local minimum of the motion speed curve (the dancer pauses or turns)
  after Gaussian smoothing with σ = `MOTION_BEAT_SIGMA_FRAMES` (2.5 frames = 83 ms, the same
  time as 5 frames at 60 fps), strict on both sides. Missing frames are bridged linearly for
  the smoothing only; a minimum within `ceil(2σ)` frames of a missing frame is dropped, since
  the bridge, not the dancer, shaped it.
- **Beat Align Score** with σ in seconds (`DEFAULT_BEAT_SIGMA_S` = 0.1 s; the report prints
  the σ used): "motion → music" averages, over the motion beats, `exp(−d² / 2σ²)` with `d` the
  distance to the nearest music beat (how the score was first defined); "music → motion"
  averages over the music beats the same with the nearest motion beat (the direction that
  rewards hitting every beat). 0.1 s rather than the 0.05 s used at 60 fps mocap: phone pose
  is sampled every 33 ms and its clock mapping adds a few ms.
- **Tempo agreement**: the audio tempo from the beat grid (`beat_interval`); the motion
  period is the strongest autocorrelation peak of the speed curve between 0.25 and 2 s, or
  the shortest-lag peak at least `OCTAVE_PREFERENCE` (85 %) as strong (so the basic period
  is found, not a multiple of it), refined between frames by a parabola. They agree when the
  motion tempo is within `tolerance` (5 %) of ½, 1 or 2 times the audio tempo (a dance step
  often spans two beats, or falls on every half beat) and the autocorrelation peak is at
  least `min_strength` (0.2; white noise stays near 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import binary_dilation, gaussian_filter1d
from scipy.signal import argrelextrema

from training.timeline import FPS

MOTION_BEAT_SIGMA_FRAMES = 2.5
DEFAULT_BEAT_SIGMA_S = 0.1
TEMPO_TOLERANCE = 0.05
MIN_PERIODICITY = 0.2
OCTAVE_PREFERENCE = 0.85
PERIOD_RANGE_S = (0.25, 2.0)
TEMPO_RATIOS = (0.5, 1.0, 2.0)
_MIN_PAIRS = 30


@dataclass(frozen=True)
class BeatAlign:
    sigma_s: float
    motion_to_music: float  # mean over motion beats; NaN without motion beats
    music_to_motion: float  # mean over music beats; NaN without music beats
    n_motion_beats: int
    n_music_beats: int


@dataclass(frozen=True)
class TempoAgreement:
    audio_bpm: float  # NaN with fewer than two beats
    motion_bpm: float  # NaN without enough valid frames
    ratio: float  # the multiple of the audio tempo the motion is nearest: 0.5, 1 or 2
    relative_error: float  # |motion_bpm / (ratio × audio_bpm) − 1|
    agrees: bool
    periodicity: float  # the autocorrelation at the motion period (strength of the rhythm)


def motion_beats(
    speed: np.ndarray, valid: np.ndarray, sigma_frames: float = MOTION_BEAT_SIGMA_FRAMES
) -> np.ndarray:
    """Frame indices (int64, ascending) of the smoothed speed curve's local minima."""
    x = np.asarray(speed, dtype=np.float64)
    ok = np.asarray(valid, dtype=bool) & np.isfinite(x)
    if ok.sum() < 3:
        return np.zeros(0, dtype=np.int64)
    frames = np.arange(x.size)
    bridged = np.interp(frames, frames[ok], x[ok])
    smooth = gaussian_filter1d(bridged, sigma_frames, mode="nearest")
    minima = argrelextrema(smooth, np.less)[0]
    guard = math.ceil(2 * sigma_frames)
    near_missing = binary_dilation(~ok, structure=np.ones(2 * guard + 1, dtype=bool))
    return minima[~near_missing[minima]].astype(np.int64)


def _nearest_distance(points: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """|p − nearest target| for each point; `targets` sorted ascending and not empty."""
    index = np.clip(np.searchsorted(targets, points), 1, targets.size - 1)
    if targets.size == 1:
        return np.abs(points - targets[0])
    left, right = targets[index - 1], targets[index]
    return np.minimum(np.abs(points - left), np.abs(points - right))


def _align(points: np.ndarray, targets: np.ndarray, sigma_s: float) -> float:
    if points.size == 0:
        return math.nan
    if targets.size == 0:
        return 0.0
    d = _nearest_distance(points, targets)
    return float(np.mean(np.exp(-(d * d) / (2 * sigma_s * sigma_s))))


def beat_align_scores(
    music_beats_s: np.ndarray, motion_beats_s: np.ndarray, sigma_s: float = DEFAULT_BEAT_SIGMA_S
) -> BeatAlign:
    """Beat Align Score both ways, beats in seconds on one clock (see the module)."""
    if not sigma_s > 0:
        raise ValueError(f"sigma_s must be positive, not {sigma_s}")
    music = np.sort(np.asarray(music_beats_s, dtype=np.float64))
    motion = np.sort(np.asarray(motion_beats_s, dtype=np.float64))
    return BeatAlign(
        sigma_s=float(sigma_s),
        motion_to_music=_align(motion, music, sigma_s),
        music_to_motion=_align(music, motion, sigma_s),
        n_motion_beats=int(motion.size),
        n_music_beats=int(music.size),
    )


def bas_chance(reference_s: np.ndarray, sigma_s: float) -> float:
    """The Beat Align Score that beats placed at random would get against `reference_s`.

    A beat uniformly placed between the first and last reference beat scores, on average,
    the mean of exp(−d²/2σ²) over that span, d the distance to the nearest reference beat:
    over a gap g between two reference beats, 2·σ·√(π/2)·erf(g / (2√2·σ)) / g. The report puts
    it beside each score: at fast tempos with a wide σ even unrelated beats score high (at
    170 BPM and σ = 0.1 s, 0.655). NaN with fewer than two reference beats."""
    beats = np.sort(np.asarray(reference_s, dtype=np.float64))
    if beats.size < 2 or not sigma_s > 0:
        return math.nan
    gaps = np.diff(beats)
    gaps = gaps[gaps > 0]
    if gaps.size == 0:
        return math.nan
    total = sum(
        2 * sigma_s * math.sqrt(math.pi / 2) * math.erf(g / (2 * math.sqrt(2) * sigma_s))
        for g in gaps.tolist()
    )
    return float(total / gaps.sum())


def _autocorrelation(x: np.ndarray, ok: np.ndarray, lags: np.ndarray) -> np.ndarray:
    """Pearson r of x[k] and x[k + lag] over the pairs valid at both ends (NaN: too few)."""
    out = np.full(lags.shape, np.nan)
    for i, lag in enumerate(lags):
        mask = ok[:-lag] & ok[lag:]
        if mask.sum() < _MIN_PAIRS:
            continue
        a, b = x[:-lag][mask], x[lag:][mask]
        a, b = a - a.mean(), b - b.mean()
        norm = np.sqrt(np.sum(a * a) * np.sum(b * b))
        out[i] = float(np.sum(a * b) / norm) if norm > 0 else 0.0
    return out


def motion_period(speed: np.ndarray, valid: np.ndarray) -> tuple[float, float]:
    """(period in frames refined between frames, its autocorrelation); (NaN, 0) if unknown."""
    x = np.asarray(speed, dtype=np.float64)
    ok = np.asarray(valid, dtype=bool) & np.isfinite(x)
    lo = math.ceil(PERIOD_RANGE_S[0] * FPS)
    hi = math.floor(PERIOD_RANGE_S[1] * FPS)
    lags = np.arange(lo - 1, hi + 2)  # one more each side to judge peaks at the ends
    if x.size <= lags[-1]:
        lags = lags[lags < x.size]
    if lags.size < 3:
        return math.nan, 0.0
    r = np.where(np.isfinite(acf := _autocorrelation(x, ok, lags)), acf, -np.inf)
    inner = np.arange(1, r.size - 1)
    peaks = inner[(r[inner] >= r[inner - 1]) & (r[inner] > r[inner + 1]) & np.isfinite(r[inner])]
    if peaks.size == 0:
        return math.nan, 0.0
    strong = peaks[r[peaks] >= OCTAVE_PREFERENCE * r[peaks].max()]
    best = int(strong[0])  # the basic period rather than a multiple of it
    left, mid, right = r[best - 1], r[best], r[best + 1]
    curve = left - 2 * mid + right
    shift = 0.5 * (left - right) / curve if np.isfinite(left + right) and curve < 0 else 0.0
    return float(lags[best] + np.clip(shift, -0.5, 0.5)), float(mid)


def beat_interval(beat_frames: np.ndarray) -> float:
    """The beat grid's interval in frames, finer than whole frames: each gap counts as
    round(gap / median gap) beats (a skipped beat counts two), and a least-squares line through
    (beat count, frame) gives the interval. NaN with fewer than two beats."""
    beats = np.sort(np.asarray(beat_frames, dtype=np.float64))
    if beats.size < 2:
        return math.nan
    gaps = np.diff(beats)
    median = float(np.median(gaps))
    if median <= 0:
        return math.nan
    counts = np.concatenate([[0.0], np.cumsum(np.maximum(1.0, np.round(gaps / median)))])
    slope = np.polyfit(counts, beats, 1)[0] if beats.size >= 3 else gaps[0] / counts[-1]
    return float(slope)


def tempo_agreement(
    beat_frames: np.ndarray,
    speed: np.ndarray,
    valid: np.ndarray,
    tolerance: float = TEMPO_TOLERANCE,
    min_strength: float = MIN_PERIODICITY,
) -> TempoAgreement:
    """Whether the dancer's periodicity matches the music's tempo (or half or double it)."""
    interval = beat_interval(beat_frames)
    audio_bpm = 60.0 * FPS / interval if interval > 0 else math.nan
    period, strength = motion_period(speed, valid)
    motion_bpm = 60.0 * FPS / period if period > 0 else math.nan
    if not (math.isfinite(audio_bpm) and math.isfinite(motion_bpm)):
        return TempoAgreement(audio_bpm, motion_bpm, math.nan, math.nan, False, strength)
    ratio = min(TEMPO_RATIOS, key=lambda k: abs(math.log(motion_bpm / (k * audio_bpm))))
    error = abs(motion_bpm / (ratio * audio_bpm) - 1.0)
    agrees = error <= tolerance and strength >= min_strength
    return TempoAgreement(audio_bpm, motion_bpm, ratio, error, agrees, strength)
