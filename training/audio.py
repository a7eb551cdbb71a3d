"""Decode a recording once to mono float32 PCM at `SAMPLE_RATE`, and keep that PCM in a cache.

PyAV opens the file, its first audio stream is decoded and `av.AudioResampler(format="flt",
layout="mono", rate=SAMPLE_RATE)` (libswresample's default downmix) turns every decoded frame
into mono float32 samples, which are streamed into a temporary `.npy` file: the header first
(its shape is filled in at the end), then the raw samples, so memory stays bounded for an
hour of audio. The finished file is renamed atomically to
`<cache_dir>/pcm/<sha256 of the input bytes>-15360.npy` with a sidecar `.json` holding the
PCM file's own sha256, its duration and what the source was.

Why a cache: two machines whose decoders differ in the last bits would give different features.
Once decoded, every rebuild reads the same PCM bytes (`pcm_sha256` names them), so a dataset is
reproducible from the cache. A cached file is opened with `np.load(..., mmap_mode="r")`.

A file that cannot be used raises `InputError` naming it: missing, empty, without an audio
stream, corrupt, or decoding to no samples. A file cut short (a truncated download) decodes to
what it holds: it is accepted with the shorter duration. No partial file is ever left in the
cache (temporary names, removed on error, and `os.replace`).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import av
import numpy as np

from training.timeline import HOP_LENGTH, SAMPLE_RATE, InputError

PCM_DTYPE = np.dtype("<f4")
SIDECAR_VERSION = 1
_BLOCK = 1 << 20


@dataclass(frozen=True)
class DecodedAudio:
    """A recording decoded to mono float32 PCM at `sample_rate`, memory-mapped from the cache."""

    path: Path
    sha256: str  # of the input file's bytes
    pcm: np.ndarray  # (n_samples,) float32, a read-only np.memmap of the cached .npy
    pcm_sha256: str  # of the cached .npy file's bytes: names the exact samples
    sample_rate: int
    duration_s: float
    n_frames: int  # 30 fps feature frames, centred: 1 + n_samples // HOP_LENGTH
    codec: str  # e.g. "vorbis"
    source_rate: int
    source_channels: int
    cache_path: Path  # the cached .npy


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def pcm_cache_path(cache_dir: Path, sha256: str) -> Path:
    return cache_dir / "pcm" / f"{sha256}-{SAMPLE_RATE}.npy"


def decode_audio(path: Path, cache_dir: Path) -> DecodedAudio:
    """The recording at `path` as mono PCM, decoded now or read from `cache_dir`."""
    path = Path(path)
    sha = _input_sha256(path)
    target = pcm_cache_path(Path(cache_dir), sha)
    sidecar = target.with_suffix(".json")
    meta = _read_sidecar(sidecar, sha) if target.exists() else None
    if meta is None:
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            source = _decode_to(path, target)
        else:  # the PCM is cached but its sidecar was lost: keep the PCM, describe it again
            source = _probe(path)
        meta = _write_sidecar(sidecar, sha, target, source)
    pcm = np.load(target, mmap_mode="r")
    return DecodedAudio(
        path=path,
        sha256=sha,
        pcm=pcm,
        pcm_sha256=str(meta["pcm_sha256"]),
        sample_rate=SAMPLE_RATE,
        duration_s=len(pcm) / SAMPLE_RATE,
        n_frames=1 + len(pcm) // HOP_LENGTH,
        codec=str(meta["codec"]),
        source_rate=int(meta["source_rate"]),
        source_channels=int(meta["source_channels"]),
        cache_path=target,
    )


def _input_sha256(path: Path) -> str:
    """The input's sha256, once it is known to be a readable, non-empty file."""
    if not path.is_file():
        raise InputError(f"{path}: audio file not found")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the audio file is empty (0 bytes)")
    try:
        return sha256_file(path)
    except OSError as exc:
        raise InputError(f"{path}: the audio file cannot be read ({exc})") from exc


def _source_info(stream: Any) -> dict[str, Any]:
    return {
        "codec": str(stream.codec_context.name),
        "source_rate": int(stream.rate or 0),
        "source_channels": int(stream.channels or 0),
    }


def _open(path: Path) -> Any:
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as exc:
        raise InputError(f"{path}: not a readable audio file ({exc})") from exc
    if not container.streams.audio:
        container.close()
        raise InputError(f"{path}: the file has no audio stream")
    return container


def _probe(path: Path) -> dict[str, Any]:
    with _open(path) as container:
        return _source_info(container.streams.audio[0])


def _decode_to(path: Path, target: Path) -> dict[str, Any]:
    """Stream the decoded PCM into a temporary .npy beside `target`, then rename it there."""
    handle, temp_name = tempfile.mkstemp(prefix=".decoding-", suffix=".npy", dir=target.parent)
    temp = Path(temp_name)
    try:
        with os.fdopen(handle, "wb") as out:
            _write_header(out, 0)
            data_start = out.tell()
            source = _decode_into(path, out)
            n_samples = (out.tell() - data_start) // PCM_DTYPE.itemsize
            if n_samples == 0:
                raise InputError(f"{path}: the audio stream decodes to no samples")
            out.seek(0)
            _write_header(out, n_samples)
            if out.tell() != data_start:
                raise RuntimeError("the .npy header changed size")  # numpy's fixed padding
            out.flush()
            os.fsync(out.fileno())
        publish(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return source


def _write_header(out: IO[bytes], n_samples: int) -> None:
    # numpy pads the header so the length of the first axis can grow in place: the header
    # written before decoding has the same size as the final one.
    header = {"descr": PCM_DTYPE.str, "fortran_order": False, "shape": (n_samples,)}
    np.lib.format.write_array_header_1_0(out, header)


def _decode_into(path: Path, out: IO[bytes]) -> dict[str, Any]:
    with _open(path) as container:
        stream = container.streams.audio[0]
        source = _source_info(stream)
        try:
            for samples in _mono_frames(container, stream):
                out.write(samples.astype(PCM_DTYPE, copy=False).tobytes())
        except av.FFmpegError as exc:
            raise InputError(f"{path}: the audio is corrupt and cannot be decoded ({exc})") from exc
    return source


def _mono_frames(container: Any, stream: Any) -> Iterator[np.ndarray]:
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    for frame in container.decode(stream):
        for out in resampler.resample(frame):
            yield out.to_ndarray().reshape(-1)
    for out in resampler.resample(None):
        yield out.to_ndarray().reshape(-1)


def _read_sidecar(sidecar: Path, sha: str) -> dict[str, Any] | None:
    """The sidecar's fields, or None when it is missing or not the one for this input."""
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    keys = {"pcm_sha256", "codec", "source_rate", "source_channels"}
    if not isinstance(meta, dict) or not keys <= meta.keys():
        return None
    if meta.get("sha256") != sha or meta.get("version") != SIDECAR_VERSION:
        return None
    return meta


def _write_sidecar(sidecar: Path, sha: str, target: Path, source: dict[str, Any]) -> dict[str, Any]:
    n_samples = int(np.load(target, mmap_mode="r").shape[0])
    meta = {
        "version": SIDECAR_VERSION,
        "sha256": sha,
        "pcm_sha256": sha256_file(target),
        "sample_rate": SAMPLE_RATE,
        "n_samples": n_samples,
        "duration_s": n_samples / SAMPLE_RATE,
        **source,
    }
    write_atomic(sidecar, json.dumps(meta, indent=1, sort_keys=True).encode("utf-8"))
    return meta


def write_atomic(target: Path, data: bytes) -> None:
    """Write `data` to `target` through a temporary file beside it and a rename."""
    handle, temp_name = tempfile.mkstemp(prefix=".writing-", dir=target.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        publish(Path(temp_name), target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def publish(temp: Path, target: Path) -> None:
    """Move a finished temporary file onto `target` atomically, readable by all."""
    os.chmod(temp, 0o644)
    os.replace(temp, target)
