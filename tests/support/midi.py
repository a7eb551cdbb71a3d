"""A small standard MIDI file reader for tests: the tempo map and the beat grid of a song chart.

The song folders in ../shared/data/music carry a `notes.mid` chart beside the audio and a
`song.ini` whose optional `delay` (milliseconds) says how much later than the chart's clock the
audio plays it. `beat_grid_s` turns both into the times, in seconds on the audio's clock, of
every quarter note of the chart: the ground truth that beat tracking is checked against.
"""

from __future__ import annotations

import configparser
import struct
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path

DEFAULT_TEMPO_US = 500_000  # 120 BPM until the first set-tempo event, as the MIDI spec says


@dataclass(frozen=True)
class Midi:
    ticks_per_quarter: int
    tempo_changes: tuple[tuple[int, int], ...]  # (tick, microseconds per quarter), by tick
    first_note_tick: int | None  # first note-on with a velocity above 0, over all tracks
    last_tick: int  # the latest event of any track

    def seconds_at(self, tick: int) -> float:
        """Seconds from the start of the file at `tick`, following the tempo map."""
        changes = self.tempo_changes or ((0, DEFAULT_TEMPO_US),)
        seconds, at_tick, tempo = 0.0, 0, DEFAULT_TEMPO_US
        for change_tick, change_tempo in changes:
            if change_tick >= tick:
                break
            seconds += (change_tick - at_tick) * tempo / 1e6 / self.ticks_per_quarter
            at_tick, tempo = change_tick, change_tempo
        return seconds + (tick - at_tick) * tempo / 1e6 / self.ticks_per_quarter

    def bpm_at(self, tick: int) -> float:
        changes = self.tempo_changes or ((0, DEFAULT_TEMPO_US),)
        index = bisect_right([t for t, _ in changes], tick) - 1
        tempo = changes[index][1] if index >= 0 else DEFAULT_TEMPO_US
        return 60e6 / tempo

    @property
    def first_note_s(self) -> float | None:
        return None if self.first_note_tick is None else self.seconds_at(self.first_note_tick)


def _varlen(data: bytes, pos: int) -> tuple[int, int]:
    value = 0
    while True:
        byte = data[pos]
        pos += 1
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            return value, pos


def _read_track(data: bytes) -> tuple[list[tuple[int, int]], int | None, int]:
    """(set-tempo events, first note-on tick, last tick) of one track's event bytes."""
    tempos: list[tuple[int, int]] = []
    first_note: int | None = None
    pos, tick, status = 0, 0, 0
    while pos < len(data):
        delta, pos = _varlen(data, pos)
        tick += delta
        if data[pos] & 0x80:
            status = data[pos]
            pos += 1
        if status == 0xFF:
            kind = data[pos]
            length, pos = _varlen(data, pos + 1)
            if kind == 0x51 and length == 3:
                tempos.append((tick, int.from_bytes(data[pos : pos + 3], "big")))
            pos += length
            if kind == 0x2F:
                break
        elif status in (0xF0, 0xF7):
            length, pos = _varlen(data, pos)
            pos += length
        else:
            size = 1 if status & 0xF0 in (0xC0, 0xD0) else 2
            if status & 0xF0 == 0x90 and data[pos + 1] > 0 and first_note is None:
                first_note = tick
            pos += size
    return tempos, first_note, tick


def read_midi(path: Path) -> Midi:
    """The header, tempo map and first note of a standard MIDI file (formats 0 and 1)."""
    data = path.read_bytes()
    if data[:4] != b"MThd":
        raise ValueError(f"{path}: not a standard MIDI file")
    header_len = struct.unpack(">I", data[4:8])[0]
    _, n_tracks, division = struct.unpack(">HHh", data[8:14])
    if division <= 0:
        raise ValueError(f"{path}: SMPTE time division is not supported")
    pos = 8 + header_len
    tempos: list[tuple[int, int]] = []
    notes: list[int] = []
    last = 0
    for _ in range(n_tracks):
        if data[pos : pos + 4] != b"MTrk":
            raise ValueError(f"{path}: expected a track at byte {pos}")
        length = struct.unpack(">I", data[pos + 4 : pos + 8])[0]
        track_tempos, first_note, end = _read_track(data[pos + 8 : pos + 8 + length])
        tempos += track_tempos
        notes += [] if first_note is None else [first_note]
        last = max(last, end)
        pos += 8 + length
    return Midi(division, tuple(sorted(tempos)), min(notes) if notes else None, last)


def song_delay_s(song_ini: Path) -> float:
    """The `delay` field of a song.ini's [song] section, in seconds (0 when absent)."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(song_ini, encoding="utf-8")
    return float(parser.get("song", "delay", fallback="0") or 0) / 1000.0


def beat_grid_s(midi: Midi, *, delay_s: float = 0.0, until_s: float | None = None) -> list[float]:
    """The time of every quarter-note tick of the chart, shifted by `delay_s`, up to `until_s`."""
    times: list[float] = []
    tick = 0
    while tick <= midi.last_tick:
        at = midi.seconds_at(tick) + delay_s
        if until_s is not None and at > until_s:
            break
        times.append(at)
        tick += midi.ticks_per_quarter
    return times
