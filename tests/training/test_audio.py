"""Decoding to cached PCM and the 35 audio features, on the real songs and on broken files."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest

import training.audio
import training.audio_features
from tests.support.midi import beat_grid_s, read_midi, song_delay_s
from tests.support.shared_data import SHARED_DATA
from training.audio import DecodedAudio, decode_audio, sha256_file
from training.audio_features import (
    BLOCK_FRAMES,
    CONTEXT_FRAMES,
    FEATURE_NAMES,
    PEAK_COLUMN,
    AudioFeatures,
    audio_features,
)
from training.timeline import FPS, HOP_LENGTH, SAMPLE_RATE, InputError

MUSIC = SHARED_DATA / "music"
CHAOS_GOD = MUSIC / "muldjord-chaos-god"
METAL_MADNESS = MUSIC / "sectoid-metal-madness"
TOLERANCE_S = 0.07


@dataclasses.dataclass
class Song:
    audio: DecodedAudio
    features: AudioFeatures
    grid_s: np.ndarray  # the MIDI chart's quarter notes, on the audio's clock
    nominal_bpm: float
    progress: list[float]
    cache: Path


def _song(folder: Path, cache: Path) -> Song:
    if not (folder / "song.ogg").exists():
        pytest.skip(f"the song is not at {folder} (../shared/data/music)")
    audio = decode_audio(folder / "song.ogg", cache)
    progress: list[float] = []
    features = audio_features(audio, cache, progress.append)
    midi = read_midi(folder / "notes.mid")
    grid = beat_grid_s(
        midi, delay_s=song_delay_s(folder / "song.ini"), until_s=audio.duration_s + 1.0
    )
    return Song(audio, features, np.array(grid), midi.bpm_at(0), progress, cache)


@pytest.fixture(scope="module")
def chaos_god(tmp_path_factory: pytest.TempPathFactory) -> Song:
    return _song(CHAOS_GOD, tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def metal_madness(tmp_path_factory: pytest.TempPathFactory) -> Song:
    return _song(METAL_MADNESS, tmp_path_factory.mktemp("cache"))


def _share_on_grid(beat_frames: np.ndarray, grid_s: np.ndarray, shift_s: float = 0.0) -> float:
    """The share of beats (frame k at k / 30 s) within 70 ms of a grid time (+ shift_s)."""
    times = beat_frames / FPS
    distance = np.abs(times[:, None] - (grid_s[None, :] + shift_s)).min(axis=1)
    return float(np.mean(distance <= TOLERANCE_S))


def _cache_files(cache: Path) -> list[Path]:
    return sorted(p for p in cache.rglob("*") if p.is_file())


# --- The MIDI reader ------------------------------------------------------------------------------


def test_the_chaos_god_chart_is_one_steady_170_bpm() -> None:
    if not (CHAOS_GOD / "notes.mid").exists():
        pytest.skip(f"the chart is not at {CHAOS_GOD}")
    midi = read_midi(CHAOS_GOD / "notes.mid")
    assert midi.ticks_per_quarter == 480
    assert len(midi.tempo_changes) == 1
    assert midi.bpm_at(0) == pytest.approx(170.0, abs=1e-3)
    assert midi.first_note_s == pytest.approx(9.882, abs=1e-3)
    assert song_delay_s(CHAOS_GOD / "song.ini") == 0.0
    grid = beat_grid_s(midi, until_s=10.0)
    assert np.allclose(np.diff(grid), 60.0 / 170.0, atol=1e-6)


# --- Decoding -------------------------------------------------------------------------------------


def test_chaos_god_decodes_to_183_5_s_of_mono_float32_at_15360_hz(chaos_god: Song) -> None:
    audio = chaos_god.audio
    assert audio.duration_s == pytest.approx(183.5, abs=0.05)
    assert (audio.codec, audio.source_rate, audio.source_channels) == ("vorbis", 44100, 2)
    assert audio.sample_rate == SAMPLE_RATE
    assert isinstance(audio.pcm, np.memmap) and audio.pcm.dtype == np.float32
    assert audio.pcm.ndim == 1 and audio.n_frames == 1 + len(audio.pcm) // HOP_LENGTH
    assert audio.sha256 == sha256_file(CHAOS_GOD / "song.ogg")
    assert audio.cache_path.name == f"{audio.sha256}-15360.npy"
    assert audio.pcm_sha256 == sha256_file(audio.cache_path)
    assert audio.cache_path.with_suffix(".json").exists()


def test_a_second_decode_reads_the_cache_and_decodes_nothing(
    chaos_god: Song, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object) -> None:
        raise AssertionError("decoded again")

    monkeypatch.setattr(training.audio, "_decode_to", refuse)
    before = chaos_god.audio.cache_path.stat().st_mtime_ns
    again = decode_audio(CHAOS_GOD / "song.ogg", chaos_god.cache)
    assert again.pcm_sha256 == chaos_god.audio.pcm_sha256
    assert chaos_god.audio.cache_path.stat().st_mtime_ns == before


def test_a_lost_sidecar_is_rebuilt_from_the_cached_pcm_without_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wav = _write_wav(tmp_path / "tone.wav", seconds=1.0)
    first = decode_audio(wav, tmp_path / "cache")
    first.cache_path.with_suffix(".json").unlink()
    monkeypatch.setattr(training.audio, "_decode_to", lambda *a: pytest.fail("decoded again"))
    again = decode_audio(wav, tmp_path / "cache")
    assert again.pcm_sha256 == first.pcm_sha256 and again.codec == "pcm_s16le"


def test_a_48_khz_stereo_wav_is_resampled_to_15360_hz_mono(tmp_path: Path) -> None:
    audio = decode_audio(_write_wav(tmp_path / "tone.wav", seconds=1.0), tmp_path / "cache")
    assert (audio.codec, audio.source_rate, audio.source_channels) == ("pcm_s16le", 48000, 2)
    assert audio.duration_s == pytest.approx(1.0, abs=0.01)
    assert 0.2 < float(np.abs(audio.pcm).max()) < 0.6  # the tone's 0.4, mixed down to mono


def test_a_recording_under_three_seconds_is_too_short_for_features(tmp_path: Path) -> None:
    audio = decode_audio(_write_wav(tmp_path / "tone.wav", seconds=1.0), tmp_path / "cache")
    with pytest.raises(InputError, match=r"tone\.wav.*too short"):
        audio_features(audio, tmp_path / "cache")
    assert not list((tmp_path / "cache" / "features").glob("*"))


def _write_wav(path: Path, *, seconds: float) -> Path:
    rate = 48000
    t = np.arange(int(rate * seconds)) / rate
    tone = (0.4 * 32767 * np.sin(2 * np.pi * 440.0 * t)).astype(np.int16)
    with av.open(str(path), "w", format="wav") as container:
        stream = container.add_stream("pcm_s16le", rate=rate, layout="stereo")
        frame = av.AudioFrame.from_ndarray(
            np.repeat(tone, 2)[None, :], format="s16", layout="stereo"
        )
        frame.rate = rate
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return path


def _broken_files(folder: Path) -> Iterator[tuple[str, Path, str]]:
    song = (CHAOS_GOD / "song.ogg").read_bytes()
    (folder / "empty.ogg").write_bytes(b"")
    yield "empty", folder / "empty.ogg", "empty"
    (folder / "notes.ogg").write_text("These are notes about a song, not a song.\n")
    yield "text", folder / "notes.ogg", "not a readable audio file"
    (folder / "zeroed.ogg").write_bytes(song[:1_000_000] + bytes(200_000) + song[1_200_000:])
    yield "corrupt", folder / "zeroed.ogg", "corrupt"
    yield "missing", folder / "nowhere.ogg", "not found"


def test_broken_files_are_refused_by_name_and_leave_nothing_in_the_cache(tmp_path: Path) -> None:
    if not (CHAOS_GOD / "song.ogg").exists():
        pytest.skip(f"the song is not at {CHAOS_GOD}")
    cache = tmp_path / "cache"
    for _kind, path, problem in _broken_files(tmp_path):
        with pytest.raises(InputError, match=problem) as refused:
            decode_audio(path, cache)
        assert path.name in str(refused.value)
    assert _cache_files(cache) == []


def test_a_file_without_an_audio_stream_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "silent-film.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        black = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
        for packet in [*stream.encode(black), *stream.encode(None)]:
            container.mux(packet)
    with pytest.raises(InputError, match=r"silent-film\.mp4: the file has no audio stream"):
        decode_audio(path, tmp_path / "cache")
    assert _cache_files(tmp_path / "cache") == []


def test_a_truncated_ogg_is_accepted_with_the_duration_it_holds(tmp_path: Path) -> None:
    """A download cut at 40 % of its bytes decodes to about 40 % of the song, not an error."""
    if not (CHAOS_GOD / "song.ogg").exists():
        pytest.skip(f"the song is not at {CHAOS_GOD}")
    song = (CHAOS_GOD / "song.ogg").read_bytes()
    cut = tmp_path / "cut.ogg"
    cut.write_bytes(song[: len(song) * 4 // 10])
    audio = decode_audio(cut, tmp_path / "cache")
    print(f"truncated to 40 % of the bytes: {audio.duration_s:.1f} s of 183.5 s")
    assert 0.3 * 183.5 < audio.duration_s < 0.5 * 183.5
    assert [p.suffix for p in _cache_files(tmp_path / "cache")] == [".json", ".npy"]


# --- Features -------------------------------------------------------------------------------------


def test_chaos_god_has_35_finite_float32_features_per_frame(chaos_god: Song) -> None:
    f = chaos_god.features
    assert f.features.shape == (chaos_god.audio.n_frames, 35) and f.features.dtype == np.float32
    assert np.isfinite(f.features).all()
    assert f.columns == FEATURE_NAMES and len(FEATURE_NAMES) == 35
    assert FEATURE_NAMES[:2] == ("onset_env", "mfcc_00") and FEATURE_NAMES[21] == "chroma_00"
    assert np.array_equal(f.onset_env, f.features[:, 0])
    assert np.array_equal(np.flatnonzero(f.features[:, -1]), f.beat_frames)
    assert set(np.unique(f.features[:, PEAK_COLUMN:])) <= {0.0, 1.0}
    assert f.features[:, PEAK_COLUMN].sum() > 100


def test_chaos_god_tempo_is_170_bpm_not_a_multiple(chaos_god: Song) -> None:
    print(f"Chaos God tempo: {chaos_god.features.tempo_bpm:.2f} BPM (chart: 170)")
    assert chaos_god.features.tempo_bpm == pytest.approx(170.0, rel=0.02)


def test_chaos_god_beats_land_on_the_midi_grid(chaos_god: Song) -> None:
    beats = chaos_god.features.beat_frames
    share = _share_on_grid(beats, chaos_god.grid_s)
    print(f"Chaos God: {share:.1%} of {len(beats)} beats within 70 ms of the 170 BPM grid")
    assert share >= 0.9
    assert len(beats) == pytest.approx(183.5 * 170 / 60, rel=0.05)


def test_progress_reaches_one_in_order(chaos_god: Song) -> None:
    steps = chaos_god.progress
    assert steps == sorted(steps) and steps[-1] == 1.0 and all(0 <= s <= 1 for s in steps)
    assert len(steps) >= 4  # 183 s is four 60 s blocks


def test_a_second_call_reads_the_cached_features(
    chaos_god: Song, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        training.audio_features, "block_features", lambda y: pytest.fail("computed again")
    )
    again = audio_features(chaos_god.audio, chaos_god.cache)
    assert again.features.tobytes() == chaos_god.features.features.tobytes()
    assert np.array_equal(again.beat_frames, chaos_god.features.beat_frames)
    assert again.tempo_bpm == chaos_god.features.tempo_bpm


def test_features_computed_again_are_bit_identical(chaos_god: Song, tmp_path: Path) -> None:
    again = audio_features(chaos_god.audio, tmp_path)
    assert again.features.tobytes() == chaos_god.features.features.tobytes()
    assert again.tempo_bpm == chaos_god.features.tempo_bpm


def _excerpt(audio: DecodedAudio, first_frame: int, seconds: float) -> DecodedAudio:
    start = first_frame * HOP_LENGTH
    pcm = audio.pcm[start : start + int(seconds * SAMPLE_RATE)]
    return dataclasses.replace(
        audio,
        pcm=pcm,
        pcm_sha256=f"{audio.pcm_sha256}-from-{first_frame}-{seconds}",
        duration_s=len(pcm) / SAMPLE_RATE,
        n_frames=1 + len(pcm) // HOP_LENGTH,
    )


@pytest.mark.parametrize("first_frame", [0, 1500])
def test_frame_features_depend_only_on_nearby_audio(
    chaos_god: Song, tmp_path: Path, first_frame: int
) -> None:
    """A 60 s excerpt gives the full track's onset, MFCC and chroma values away from its ends.

    From frame 1500 the excerpt also straddles the full track's block boundary at frame 1800.
    (Measured: equal to the bit; the tolerance leaves room for other FFT builds.)
    """
    part = audio_features(_excerpt(chaos_god.audio, first_frame, 60.0), tmp_path)
    lo = 0 if first_frame == 0 else CONTEXT_FRAMES
    hi = BLOCK_FRAMES - CONTEXT_FRAMES
    mine = np.asarray(part.features[lo:hi, :PEAK_COLUMN])
    full = np.asarray(
        chaos_god.features.features[first_frame + lo : first_frame + hi, :PEAK_COLUMN]
    )
    assert np.allclose(mine, full, rtol=1e-5, atol=1e-5)


# --- The live song --------------------------------------------------------------------------------


def test_metal_madness_has_features_and_its_nominal_150_bpm(metal_madness: Song) -> None:
    f = metal_madness.features
    assert f.features.shape == (metal_madness.audio.n_frames, 35)
    assert np.isfinite(f.features).all()
    assert metal_madness.nominal_bpm == pytest.approx(150.0)
    print(f"Metal madness tempo: {f.tempo_bpm:.2f} BPM (chart: 150)")
    assert f.tempo_bpm == pytest.approx(150.0, rel=0.02)


def test_metal_madness_beats_keep_the_charts_period(metal_madness: Song) -> None:
    """A live take: the tracker follows the off-beat in some sections, so the share on the grid
    is low; shifted by the best constant phase, most beats keep to the chart's period."""
    beats, grid = metal_madness.features.beat_frames, metal_madness.grid_s
    on_grid = _share_on_grid(beats, grid)
    shifts = np.arange(-0.2, 0.2001, 0.005)
    best = max(_share_on_grid(beats, grid, float(s)) for s in shifts)
    print(f"Metal madness: {on_grid:.1%} on the grid, {best:.1%} at the best constant phase")
    assert best >= 0.5
