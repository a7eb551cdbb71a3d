"""`build`: inputs → a verified, byte-reproducible dataset folder.

Order of work, each step with progress on stderr:

1. Read every input (`training.sources`) and hash every file it stands for.
2. Split the sources (`training.windows.assign_splits`).
3. Decode each audio track once (cached by the file's hash, `training.audio`) and compute its
   features once (`training.audio_features`, cached by the decoded PCM's hash).
4. Each pair in id order (`training.pair_build`): windows into the split's shards.
5. `config.json`, `manifest.json`, `checksums.sha256`.

The dataset is written into a scratch folder beside `--out` and renamed when whole, so a folder
with the final name is always complete.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from training.audio import DecodedAudio, decode_audio, sha256_file
from training.audio_features import FEATURE_NAMES, FEATURE_VERSION, AudioFeatures, audio_features
from training.config import BuildConfig
from training.manifest import (
    CONFIG,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    canonical_json,
    dataset_id,
    run_id,
    toolchain,
    write_checksums,
)
from training.pair_build import build_pair
from training.progress import Progress
from training.report import summarise
from training.shards import ShardWriter
from training.sources import Input, Pair, read_input
from training.timeline import FPS, InputError
from training.windows import assign_splits


def default_cache_dir() -> Path:
    configured = os.environ.get("MOTIONMIX_TRAINING_CACHE")
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "motionmix-training"


def reproduction_command(given: list[str], config_given: bool) -> list[str]:
    command = ["python", "-m", "training", "build", *given, "--out", "<DIR>"]
    if config_given:
        command += ["--config", f"<DIR>/{CONFIG}"]
    return command


def build(
    given: list[str],
    out_dir: Path,
    config: BuildConfig,
    *,
    cache_dir: Path,
    progress: Progress,
    config_given: bool = False,
) -> dict[str, Any]:
    """Build the dataset of `given` into `out_dir`; return its manifest."""
    if not given:
        raise InputError("build needs at least one input")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise InputError(f"{out_dir}: exists and is not an empty folder")
    cache_dir.mkdir(parents=True, exist_ok=True)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        manifest = _build_into(given, scratch, config, cache_dir, progress, config_given)
        if out_dir.exists():
            out_dir.rmdir()
        scratch.rename(out_dir)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    progress.note(f"dataset {manifest['dataset_id'][:16]} written to {out_dir}")
    return manifest


def _build_into(
    given: list[str],
    scratch: Path,
    config: BuildConfig,
    cache_dir: Path,
    progress: Progress,
    config_given: bool,
) -> dict[str, Any]:
    progress.step("read inputs")
    inputs = [read_input(item, cache_dir) for item in given]
    input_entries = [_hash_input(item, progress) for item in inputs]
    pairs = sorted((pair for item in inputs for pair in item.pairs), key=lambda p: p.pair_id)
    _check_unique(pairs)
    progress.done(f"{len(inputs)} inputs, {len(pairs)} pairs")
    splits = assign_splits([item.source for item in inputs], config.val_fraction, config.split_seed)

    tracks = _audio(pairs, cache_dir, progress)
    work = scratch / ".work"
    work.mkdir()
    writers = {name: ShardWriter(scratch, name, config.shard_windows) for name in ("train", "val")}
    entries = []
    progress.step("pairs")
    for index, pair in enumerate(pairs):
        decoded, features = tracks[str(pair.audio_path)]
        pair_work = Path(tempfile.mkdtemp(prefix="pair-", dir=work))
        label = f"{index + 1}/{len(pairs)} {pair.pair_id}"

        def report(fraction: float, index: int = index, label: str = label) -> None:
            progress.update((index + fraction) / len(pairs), label)

        writer = writers[splits[pair.source]]
        entry = build_pair(pair, index, features, writer, config, pair_work, report)
        shutil.rmtree(pair_work)
        entry["audio_sha256"] = decoded.sha256
        entries.append(entry)
        progress.update((index + 1) / len(pairs), f"{index + 1}/{len(pairs)} {pair.pair_id}")
    for writer in writers.values():
        writer.flush()
    shutil.rmtree(work)
    progress.done()

    progress.step("manifest")
    (scratch / CONFIG).write_text(canonical_json(config.as_dict()), encoding="utf-8")
    shards = [info for writer in writers.values() for info in writer.written]
    hashes = {CONFIG: sha256_file(scratch / CONFIG)}
    hashes.update({info.name: sha256_file(scratch / info.name) for info in shards})
    tools = toolchain()
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "dataset_id": dataset_id(hashes),
        "run_id": run_id(input_entries, config.as_dict(), tools),
        "toolchain": tools,
        "config": config.as_dict(),
        "reproduce": reproduction_command(given, config_given),
        "inputs": input_entries,
        "audio": [_audio_entry(*tracks[key]) for key in sorted(tracks)],
        "features": {"audio": list(FEATURE_NAMES), "audio_version": FEATURE_VERSION, "fps": FPS},
        "splits": _splits(splits, writers),
        "pairs": entries,
        "outputs": [
            {"name": name, "sha256": hashes[name], "bytes": (scratch / name).stat().st_size}
            for name in sorted(hashes)
        ],
    }
    manifest["summary"] = summarise(manifest)
    (scratch / MANIFEST).write_text(canonical_json(manifest), encoding="utf-8")
    write_checksums(scratch)
    progress.done(f"{len(shards)} shards")
    return manifest


def _hash_input(item: Input, progress: Progress) -> dict[str, Any]:
    files = []
    for name, path in item.files:
        progress.update(0.0, f"hashing {path.name}")
        files.append(
            {
                "name": name,
                "path": str(path),
                "sha256": sha256_file(path),
                "bytes": path.stat().st_size,
            }
        )
    entry: dict[str, Any] = {"given": item.given, "kind": item.kind, "source": item.source}
    entry["files"] = files
    entry.update(item.details)
    return entry


def _check_unique(pairs: list[Pair]) -> None:
    seen: set[str] = set()
    for pair in pairs:
        if pair.pair_id in seen:
            raise InputError(
                f"two inputs give the pair {pair.pair_id!r}: give each a distinct source"
            )
        seen.add(pair.pair_id)


def _audio(
    pairs: list[Pair], cache_dir: Path, progress: Progress
) -> dict[str, tuple[DecodedAudio, AudioFeatures]]:
    tracks: dict[str, tuple[DecodedAudio, AudioFeatures]] = {}
    paths = sorted({str(pair.audio_path) for pair in pairs})
    for number, path in enumerate(paths, start=1):
        progress.step(f"audio {number}/{len(paths)} {Path(path).name}: decode")
        decoded = decode_audio(Path(path), cache_dir)
        progress.done(f"{decoded.duration_s:.1f} s")
        progress.step(f"audio {number}/{len(paths)} {Path(path).name}: features")
        features = audio_features(decoded, cache_dir, progress=progress.update)
        progress.done(f"{features.tempo_bpm:.2f} BPM, {len(features.beat_frames)} beats")
        tracks[path] = (decoded, features)
    return tracks


def _audio_entry(decoded: DecodedAudio, features: AudioFeatures) -> dict[str, Any]:
    return {
        "sha256": decoded.sha256,
        "pcm_sha256": decoded.pcm_sha256,
        "duration_s": round(decoded.duration_s, 6),
        "frames": int(features.features.shape[0]),
        "codec": decoded.codec,
        "source_rate": decoded.source_rate,
        "source_channels": decoded.source_channels,
        "tempo_bpm": round(float(features.tempo_bpm), 4),
        "beats": len(features.beat_frames),
    }


def _splits(splits: dict[str, str], writers: dict[str, ShardWriter]) -> dict[str, Any]:
    return {
        name: {
            "sources": sorted(source for source, split in splits.items() if split == name),
            "windows": sum(info.windows for info in writer.written),
            "shards": [info.name for info in writer.written],
        }
        for name, writer in writers.items()
    }
