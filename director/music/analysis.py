"""The beat grid of a music track: PyAV decodes, librosa finds the beats, a fit gives the BPM.

1. Decode with PyAV to mono float32 at `SAMPLE_RATE`.
2. librosa's onset-strength envelope (hop `HOP_LENGTH`).
3. The tempo: the strongest peak of the envelope's tempogram (its autocorrelation, averaged
   over the track) between `TEMPO_MIN_BPM` and `TEMPO_MAX_BPM`, with a flat prior; then the
   beat is the fastest metrical level that is nearly as strong: when the peak at twice that
   tempo (still in range) reaches `DOUBLE_TEMPO_RATIO` of it, the double is taken. (librosa's
   default prior centres on 120 BPM and pulls a fast track onto a slower level: "Chaos God",
   170 BPM, reads as 112 with it; a metronome with accented bars reads at half speed without
   the second step.)
4. `librosa.beat.beat_track` around that tempo: the beats, in seconds.
5. The BPM from the beats themselves, not from the tempo bin (whose steps are several BPM
   apart at these tempos): each beat gets its count on the grid (a gap of two intervals is
   two counts), and a straight line through (count, time), refitted without the beats that
   sit more than three robust deviations off it, gives the beat period.

Run as `python -m director.music.analysis PATH`, it prints one JSON object per line:
`{"progress": 0..1, "stage": ...}` as it goes, then `{"result": {...}}` or `{"error": ...}`
(exit status 0 or 1). The server runs it that way, in a child process (`director/music/jobs.py`):
librosa's first call compiles with numba and holds the GIL for seconds, which the server's
event loop must never wait on.

Imports nothing of Django (see the package's docstring).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import av
import numpy as np

SAMPLE_RATE = 22050
HOP_LENGTH = 512
TEMPO_MIN_BPM = 60.0
TEMPO_MAX_BPM = 200.0
# A beat further than this many robust deviations (or 20 ms, if more) off the fitted line is
# left out of the refit.
OUTLIER_DEVIATIONS = 3.0
OUTLIER_FLOOR_S = 0.02
MIN_BEATS = 4
DOUBLE_TEMPO_RATIO = 0.8
DOUBLE_TEMPO_TOLERANCE = 0.04

Progress = Callable[[str, float], None]


class AnalysisError(Exception):
    """The grid cannot be found; the message says why (shown to the operator)."""


@dataclass(frozen=True)
class BeatGrid:
    bpm: float
    beats: list[float]
    duration_s: float
    tempo_estimate_bpm: float
    inlier_share: float
    details: dict[str, Any] = field(default_factory=dict)


def _quiet(stage: str, fraction: float) -> None:
    return None


def decode_mono(
    path: str, *, sample_rate: int = SAMPLE_RATE, progress: Progress = _quiet
) -> np.ndarray:
    """The first audio stream, mixed to mono float32 at `sample_rate`."""
    chunks: list[np.ndarray] = []
    with av.open(path) as container:
        if not container.streams.audio:
            raise AnalysisError("The file has no audio stream.")
        stream = container.streams.audio[0]
        total = float(stream.duration * stream.time_base) if stream.duration else 0.0
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        done = 0
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1))
                done += out.samples
            if total and len(chunks) % 200 == 0:
                progress("decoding", min(1.0, done / sample_rate / total))
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().reshape(-1))
    if not chunks:
        raise AnalysisError("No audio decodes from the file.")
    return np.concatenate(chunks).astype(np.float32, copy=False)


def grid_bpm(beats: np.ndarray) -> tuple[float, float]:
    """(BPM, share of beats on the grid) from a robust line through the beat times."""
    intervals = np.diff(beats)
    median = float(np.median(intervals))
    if median <= 0:
        raise AnalysisError("The beats found are not in time order.")
    counts = np.concatenate([[0.0], np.cumsum(np.maximum(1.0, np.round(intervals / median)))])
    keep = np.ones(len(beats), dtype=bool)
    period = median
    for _ in range(4):
        period, offset = np.polyfit(counts[keep], beats[keep], 1)
        residual = beats - (period * counts + offset)
        spread = float(np.median(np.abs(residual[keep] - np.median(residual[keep]))))
        limit = max(OUTLIER_DEVIATIONS * 1.4826 * spread, OUTLIER_FLOOR_S)
        now_keep = np.abs(residual) <= limit
        if now_keep.sum() < MIN_BEATS or np.array_equal(now_keep, keep):
            break
        keep = now_keep
    return 60.0 / float(period), float(keep.mean())


def estimate_tempo(envelope: np.ndarray) -> float:
    """The beat's tempo in BPM from the onset envelope (step 3 of the module's docstring)."""
    import librosa

    tempogram = librosa.feature.tempogram(
        onset_envelope=envelope, sr=SAMPLE_RATE, hop_length=HOP_LENGTH
    )
    strength = tempogram.mean(axis=1)
    with np.errstate(divide="ignore"):
        bpms = librosa.tempo_frequencies(len(strength), sr=SAMPLE_RATE, hop_length=HOP_LENGTH)
    in_range = np.isfinite(bpms) & (bpms >= TEMPO_MIN_BPM) & (bpms <= TEMPO_MAX_BPM)
    if not in_range.any() or not np.any(strength[in_range] > 0):
        raise AnalysisError("No steady pulse found in the track.")
    candidates = np.flatnonzero(in_range)
    best = int(candidates[np.argmax(strength[candidates])])
    doubles = candidates[np.abs(bpms[candidates] / (2 * bpms[best]) - 1) <= DOUBLE_TEMPO_TOLERANCE]
    if len(doubles):
        double = int(doubles[np.argmax(strength[doubles])])
        if strength[double] >= DOUBLE_TEMPO_RATIO * strength[best]:
            best = double
    return float(bpms[best])


def beat_grid(path: str, *, progress: Progress = _quiet) -> BeatGrid:
    # Imported here: librosa takes a second or two to import, and only this needs it.
    import librosa

    progress("decoding", 0.0)
    samples = decode_mono(path, progress=lambda s, f: progress(s, 0.4 * f))
    duration = len(samples) / SAMPLE_RATE
    if not np.any(np.abs(samples) > 1e-4):
        raise AnalysisError(f"The track is silent ({duration:.1f} s of silence): no beat.")
    progress("onsets", 0.45)
    envelope = librosa.onset.onset_strength(y=samples, sr=SAMPLE_RATE, hop_length=HOP_LENGTH)
    progress("tempo", 0.65)
    tempo = estimate_tempo(envelope)
    progress("beats", 0.8)
    _, beats = librosa.beat.beat_track(
        onset_envelope=envelope, sr=SAMPLE_RATE, hop_length=HOP_LENGTH, bpm=tempo, units="time"
    )
    beats = np.asarray(beats, dtype=float)
    if len(beats) < MIN_BEATS:
        raise AnalysisError(
            f"Only {len(beats)} beat(s) found in {duration:.1f} s; the track has no steady pulse."
        )
    bpm, inliers = grid_bpm(beats)
    progress("done", 1.0)
    return BeatGrid(
        bpm=round(bpm, 3),
        beats=[round(float(t), 4) for t in beats],
        duration_s=duration,
        tempo_estimate_bpm=round(tempo, 3),
        inlier_share=round(inliers, 4),
        details={
            "method": "librosa onset envelope, tempogram peak (flat prior), beat_track, "
            "robust line fit of the beat times",
            "sample_rate": SAMPLE_RATE,
            "hop_length": HOP_LENGTH,
            "tempo_range_bpm": [TEMPO_MIN_BPM, TEMPO_MAX_BPM],
            "tempo_estimate_bpm": round(tempo, 3),
            "inlier_share": round(inliers, 4),
            "librosa": librosa.__version__,
            "numpy": np.__version__,
            "av": av.__version__,
        },
    )


def main(argv: list[str]) -> int:
    """The child process: JSON lines on stdout (see the module's docstring)."""
    if len(argv) != 1:
        sys.stderr.write("usage: python -m director.music.analysis PATH\n")
        return 2
    last = [-1.0]

    def report(stage: str, fraction: float) -> None:
        if fraction - last[0] >= 0.05 or fraction >= 1.0:
            last[0] = fraction
            print(json.dumps({"progress": round(fraction, 3), "stage": stage}), flush=True)

    try:
        grid = beat_grid(argv[0], progress=report)
    except AnalysisError as exc:
        print(json.dumps({"error": str(exc)}), flush=True)
        return 1
    except (av.FFmpegError, OSError) as exc:
        print(json.dumps({"error": f"The file could not be decoded: {exc}"}), flush=True)
        return 1
    print(json.dumps({"result": asdict(grid)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
