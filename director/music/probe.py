"""Checking an uploaded music file with PyAV, before anything is stored.

A file is taken when PyAV opens it, it holds an audio stream, and that stream decodes from the
first frame to the last without an error. A truncated file is refused when

- decoding fails on the way (most formats), or
- the decoded audio is shorter than what the container's header claims, by more than
  `TRUNCATED_SLACK_S` and `1 - TRUNCATED_RATIO` of it (WAV, FLAC, MP4: their headers state
  the length), or
- a WAV file's data chunk says it holds more bytes than the file has (FFmpeg clamps the
  duration it reports to the bytes present, so the header must be read here), or
- an Ogg file does not end with a complete end-of-stream page. Ogg states no length up front
  (a demuxer reads it from the last page there is), so a cut-off Ogg decodes cleanly to where
  it was cut; only its framing says it stopped early.

An MP3 without a Xing/VBRI header states no length either, so one cut at a frame boundary
cannot be told from a shorter song; that is the one case this check lets through.

Imports nothing of Django (see the package's docstring).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import av

TRUNCATED_RATIO = 0.97
TRUNCATED_SLACK_S = 0.5
OGG_MAX_PAGE_BYTES = 27 + 255 + 255 * 255
OGG_EOS = 0x04


class AudioRefused(Exception):
    """The file is not taken; the message says what was wrong and what to do."""

    code = "invalid"


class AudioEmpty(AudioRefused):
    code = "empty"


class AudioNotAudio(AudioRefused):
    code = "not_audio"


class AudioCorrupt(AudioRefused):
    code = "corrupt"


class AudioTruncated(AudioRefused):
    code = "truncated"


@dataclass(frozen=True)
class AudioProbe:
    container: str
    codec: str
    duration_s: float  # decoded samples over the sample rate
    claimed_duration_s: float | None  # what the container says, when it says
    sample_rate: int
    channels: int

    @property
    def codec_label(self) -> str:
        return self.codec.replace("_", " ")


def probe(path: str | os.PathLike[str], *, name: str = "the file") -> AudioProbe:
    """Open, find the audio, decode it all; raise an `AudioRefused` that says why not."""
    if os.path.getsize(path) == 0:
        raise AudioEmpty(f"{name} is empty (0 bytes); choose the music file again.")
    try:
        container = av.open(os.fspath(path), mode="r")
    except (av.FFmpegError, EOFError) as exc:
        raise AudioNotAudio(
            f"{name} is not a media file PyAV can read ({_reason(exc)}); upload an audio file "
            "such as Ogg, MP3, WAV, FLAC or M4A."
        ) from None
    with container:
        if not container.streams.audio:
            kinds = sorted({s.type for s in container.streams}) or ["no streams"]
            raise AudioNotAudio(
                f"{name} has no audio stream (PyAV reads it as {container.format.name}: "
                f"{', '.join(kinds)}); upload the music itself."
            )
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate or stream.rate or 0
        channels = stream.codec_context.channels or 0
        claimed = _claimed_duration(container, stream)
        samples = 0
        try:
            for packet in container.demux(stream):
                for frame in packet.decode():
                    samples += frame.samples
                    rate = rate or frame.sample_rate
        except (av.FFmpegError, EOFError) as exc:
            decoded = samples / rate if rate else 0.0
            raise AudioCorrupt(
                f"{name} stops decoding after {decoded:.1f} s ({_reason(exc)}): it is corrupt "
                "or cut off. Upload the complete file."
            ) from None
        if samples == 0 or rate <= 0:
            raise AudioCorrupt(
                f"{name} has an audio stream ({stream.codec_context.name}) but no audio "
                "decodes from it; upload a file that plays."
            )
        duration = samples / rate
        fmt = container.format.name
        codec = stream.codec_context.name
    if claimed is not None and duration < min(
        claimed - TRUNCATED_SLACK_S, claimed * TRUNCATED_RATIO
    ):
        raise AudioTruncated(
            f"{name} is truncated: its header says {claimed:.1f} s but only {duration:.1f} s "
            "decode. Upload the complete file."
        )
    if "ogg" in fmt.split(",") and not ogg_ends_cleanly(path):
        raise AudioTruncated(
            f"{name} is truncated: the Ogg stream stops after {duration:.1f} s without its "
            "end-of-stream page. Upload the complete file."
        )
    if fmt == "wav" and not wav_data_complete(path):
        raise AudioTruncated(
            f"{name} is truncated: its data chunk is longer than the {duration:.1f} s of audio "
            "the file holds. Upload the complete file."
        )
    return AudioProbe(
        container=fmt[:64],
        codec=codec[:64],
        duration_s=duration,
        claimed_duration_s=claimed,
        sample_rate=int(rate),
        channels=int(channels),
    )


def _claimed_duration(
    container: av.container.InputContainer, stream: av.AudioStream
) -> float | None:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return float(container.duration / av.time_base)
    return None


def ogg_ends_cleanly(path: str | os.PathLike[str]) -> bool:
    """Does the file end with a complete Ogg page that carries the end-of-stream flag?"""
    size = os.path.getsize(path)
    with Path(path).open("rb") as handle:
        handle.seek(max(0, size - OGG_MAX_PAGE_BYTES))
        tail = handle.read()
    start = tail.rfind(b"OggS")
    # The last capture pattern could sit inside a packet's data: walk back to a real page
    # header whose length reaches exactly the end of the file.
    while start >= 0:
        header = tail[start : start + 27]
        if len(header) == 27 and header[4] == 0:
            segments = header[26]
            table = tail[start + 27 : start + 27 + segments]
            if len(table) == segments:
                end = start + 27 + segments + sum(table)
                if end == len(tail):
                    (flags,) = struct.unpack_from("B", header, 5)
                    return bool(flags & OGG_EOS)
        start = tail.rfind(b"OggS", 0, start)
    return False


def wav_data_complete(path: str | os.PathLike[str]) -> bool:
    """Are all the bytes the RIFF `data` chunk declares present? (A streaming WAV that left
    the size open, 0 or 0xFFFFFFFF, is taken as complete.)"""
    size = os.path.getsize(path)
    with Path(path).open("rb") as handle:
        if handle.read(12)[:4] not in (b"RIFF", b"RIFX"):
            return True  # RF64 and other variants: FFmpeg's own duration check covers them
        offset = 12
        while offset + 8 <= size:
            handle.seek(offset)
            chunk_id, chunk_size = struct.unpack("<4sI", handle.read(8))
            if chunk_id == b"data":
                if chunk_size in (0, 0xFFFFFFFF):
                    return True
                return offset + 8 + chunk_size <= size
            offset += 8 + chunk_size + (chunk_size & 1)
    return True


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return str(text).rstrip(".") or type(exc).__name__
