"""The alignment check on real music and real mocap, and the report's beat and tempo metrics."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from tests.support.shared_data import SHARED_DATA
from training.align import xcorr_lag
from training.metrics import (
    beat_align_scores,
    motion_beats,
    tempo_agreement,
)
from training.timeline import FPS, HOP_LENGTH, SAMPLE_RATE

SONG = SHARED_DATA / "music" / "muldjord-chaos-god" / "song.ogg"
SALSA = SHARED_DATA / "motion" / "cmu-salsa"
LAG = 7


@pytest.fixture(scope="module")
def onset() -> np.ndarray:
    """librosa's onset envelope of the first 60 s of Chaos God, on the 30 fps grid."""
    if not SONG.exists():
        pytest.skip(f"Chaos God is not at {SONG} (../shared/data/music)")
    import av
    import librosa

    pieces, count = [], 0
    with av.open(str(SONG)) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        for frame in container.decode(audio=0):
            for out in resampler.resample(frame):
                pieces.append(out.to_ndarray().reshape(-1))
                count += pieces[-1].size
            if count >= 60 * SAMPLE_RATE:
                break
    samples = np.concatenate(pieces)[: 60 * SAMPLE_RATE].astype(np.float32)
    return librosa.onset.onset_strength(y=samples, sr=SAMPLE_RATE, hop_length=HOP_LENGTH)


def test_a_known_lag_of_the_music_is_recovered(onset: np.ndarray) -> None:
    rng = np.random.default_rng(7)
    speed = np.roll(onset, LAG) + onset.std() * rng.standard_normal(onset.size)
    valid = np.ones(onset.size, dtype=bool)
    valid[:LAG] = False  # rolled around from the end
    valid[400:460] = False  # two seconds without a pose
    estimate = xcorr_lag(onset, speed, valid, max_lag_frames=30)
    assert estimate.lag_frames == LAG
    assert estimate.lag_s == pytest.approx(LAG / FPS, abs=0.01)
    assert estimate.confidence > 0.8
    assert estimate.n_frames == onset.size - LAG - 60
    # the opposite order gives the opposite lag
    assert xcorr_lag(speed, onset, valid, 30, reference_valid=valid).lag_frames == -LAG


def test_noise_gives_low_confidence(onset: np.ndarray) -> None:
    rng = np.random.default_rng(11)
    for _ in range(3):
        noise = rng.standard_normal(onset.size)
        estimate = xcorr_lag(onset, noise, np.ones(onset.size, dtype=bool), 30)
        assert estimate.confidence < 0.2
        assert abs(estimate.peak) < 0.15


def _speed_30fps(path: Path) -> np.ndarray:
    """Mean joint speed (m/s) at 30 fps of a 120 fps take: every fourth frame."""
    try:
        from training.formats.bvh import read_bvh
    except ImportError:
        read_bvh = None
    if read_bvh is not None:
        chunks = list(read_bvh(path).chunks())
        joints = np.concatenate([c.joints for c in chunks])[::4].astype(np.float64)
    else:  # the root's position only: the first three numbers of each MOTION line
        lines = path.read_text().split("Frame Time:")[1].splitlines()[1:]
        rows = [line.split()[:3] for line in lines if line.strip()]
        joints = np.asarray(rows, dtype=np.float64)[::4, None, :]
    return np.linalg.norm(np.diff(joints, axis=0), axis=2).mean(axis=1) * FPS


def test_leader_and_follower_share_one_clock() -> None:
    paths = [SALSA / "60_10_scaled.bvh", SALSA / "61_10_scaled.bvh"]
    if not all(p.exists() for p in paths):
        pytest.skip(f"the CMU salsa takes are not at {SALSA} (../shared/data/motion)")
    leader, follower = (_speed_30fps(p) for p in paths)
    ok = np.ones(leader.size, dtype=bool)
    estimate = xcorr_lag(leader, follower, ok, max_lag_frames=15, reference_valid=ok)
    assert abs(estimate.lag_frames) <= 1
    assert abs(estimate.lag_s) <= 1 / FPS
    assert estimate.peak > 0.2
    # the follower shifted by 5 frames is found 5 frames late
    late = np.concatenate([np.full(5, follower[0]), follower[:-5]])
    assert xcorr_lag(leader, late, ok, 15, reference_valid=ok).lag_frames == 5


def test_beat_align_scores_both_ways() -> None:
    music = np.array([1.0, 2.0, 3.0])
    motion = np.array([5.0, 1.0, 2.1])
    score = beat_align_scores(music, motion, sigma_s=0.1)
    g = lambda d: math.exp(-(d * d) / (2 * 0.1 * 0.1))  # noqa: E731
    assert score.motion_to_music == pytest.approx((g(0.0) + g(0.1) + g(2.0)) / 3, rel=1e-12)
    assert score.music_to_motion == pytest.approx((g(0.0) + g(0.1) + g(0.9)) / 3, rel=1e-12)
    assert (score.n_motion_beats, score.n_music_beats, score.sigma_s) == (3, 3, 0.1)
    empty = beat_align_scores(music, np.zeros(0), sigma_s=0.05)
    assert math.isnan(empty.motion_to_music) and empty.music_to_motion == 0.0


def test_motion_beats_are_the_speed_minima_away_from_gaps() -> None:
    t = np.arange(300) / FPS
    speed = 1.0 + np.cos(2 * np.pi * t / 0.6)  # minima at 0.3 s + k × 0.6 s: frame 9 + 18 k
    valid = np.ones(t.size, dtype=bool)
    beats = motion_beats(speed, valid)
    assert beats.tolist() == list(range(9, 290, 18))  # 297 is too near the end to tell
    valid[104:112] = False  # the guard (5 frames) reaches frame 99, not 117
    assert motion_beats(speed, valid).tolist() == [b for b in range(9, 290, 18) if b != 99]
    assert motion_beats(speed, np.zeros(t.size, dtype=bool)).size == 0


def test_tempo_agreement_allows_half_and_double_time() -> None:
    beat_s = 60 / 170
    beat_frames = np.arange(0, 60, beat_s) * FPS
    t = np.arange(60 * FPS) / FPS
    rng = np.random.default_rng(3)
    valid = np.ones(t.size, dtype=bool)
    valid[500:530] = False
    half_time = 1.0 + np.cos(2 * np.pi * t / (2 * beat_s)) + 0.3 * rng.standard_normal(t.size)
    result = tempo_agreement(beat_frames, half_time, valid)
    assert result.audio_bpm == pytest.approx(170, rel=1e-3)
    assert result.motion_bpm == pytest.approx(85, rel=0.02)
    assert result.ratio == 0.5 and result.agrees and result.relative_error < 0.02
    on_beat = 1.0 + np.cos(2 * np.pi * t / beat_s) + 0.3 * rng.standard_normal(t.size)
    assert tempo_agreement(beat_frames, on_beat, valid).ratio == 1.0
    for _ in range(3):
        random = tempo_agreement(beat_frames, rng.standard_normal(t.size), valid)
        assert not random.agrees


def test_the_chance_level_is_what_random_beats_score() -> None:
    from training.metrics import bas_chance

    grid = np.arange(0.0, 60.0, 60 / 170)  # 170 BPM
    chance = bas_chance(grid, 0.1)
    gap = 60 / 170
    expected = 2 * 0.1 * np.sqrt(np.pi / 2) * math.erf(gap / (2 * np.sqrt(2) * 0.1)) / gap
    assert chance == pytest.approx(expected, rel=1e-9)
    assert chance == pytest.approx(0.655, abs=0.001)
    random_beats = np.random.default_rng(3).uniform(grid[0], grid[-1], 20000)
    scored = beat_align_scores(grid, random_beats, 0.1).motion_to_music
    assert scored == pytest.approx(chance, abs=0.01)
    assert math.isnan(bas_chance(np.array([1.0]), 0.1))
