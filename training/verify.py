"""`verify`: re-hash the dataset, re-derive its id, and check the inputs it names.

Fails (problems listed) when a file differs from `checksums.sha256` or the manifest, a file is
missing or unlisted, a shard does not open or holds another number of windows than the
manifest says, the dataset id re-derived from `config.json` and the shards differs, or an input
file still at its recorded path has changed. An input no longer at its path is reported as
not checked: the dataset itself can still be verified.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from training.audio import sha256_file
from training.manifest import CHECKSUMS, CONFIG, MANIFEST, dataset_id, read_manifest
from training.timeline import InputError


@dataclass
class Verification:
    dataset_id: str
    files_checked: int = 0
    inputs_checked: int = 0
    inputs_absent: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(out_dir: Path) -> Verification:
    if not (out_dir / MANIFEST).is_file():
        raise InputError(f"{out_dir}: no {MANIFEST}: not a dataset folder")
    try:
        manifest: dict | None = read_manifest(out_dir)
    except InputError as error:
        manifest = None
        damage = str(error).removeprefix(f"{out_dir / MANIFEST}: ")
    result = Verification(dataset_id=manifest["dataset_id"] if manifest else "unknown")
    if manifest is None:
        result.problems.append(f"{MANIFEST}: {damage}")
    listed = _checksums(out_dir, result)
    present = {path.name for path in out_dir.iterdir() if path.is_file()} - {CHECKSUMS}
    for name in sorted(present - set(listed)):
        result.problems.append(f"{name}: not listed in {CHECKSUMS}")
    hashes: dict[str, str] = {}
    for name, expected in sorted(listed.items()):
        path = out_dir / name
        if not path.is_file():
            result.problems.append(f"{name}: missing")
            continue
        actual = sha256_file(path)
        result.files_checked += 1
        if actual != expected:
            result.problems.append(f"{name}: sha256 {actual[:16]}… differs from {expected[:16]}…")
        hashes[name] = actual
    if manifest is None:
        return result
    for output in manifest["outputs"]:
        if hashes.get(output["name"], output["sha256"]) != output["sha256"]:
            result.problems.append(f"{output['name']}: differs from the manifest's sha256")
    content = {output["name"]: hashes.get(output["name"], "") for output in manifest["outputs"]}
    derived = dataset_id(content)
    if derived != manifest["dataset_id"] or CONFIG not in content:
        result.problems.append(
            f"dataset id re-derived as {derived[:16]}…, "
            f"the manifest says {manifest['dataset_id'][:16]}…"
        )
    _shards(out_dir, manifest, result)
    _inputs(manifest, result)
    return result


def _checksums(out_dir: Path, result: Verification) -> dict[str, str]:
    path = out_dir / CHECKSUMS
    if not path.is_file():
        result.problems.append(f"{CHECKSUMS}: missing")
        return {}
    listed = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64:
            result.problems.append(f"{CHECKSUMS} line {number}: not '<sha256>  <name>'")
            continue
        listed[name] = digest
    if MANIFEST not in listed:
        result.problems.append(f"{CHECKSUMS}: does not list {MANIFEST}")
    return listed


def _shards(out_dir: Path, manifest: dict, result: Verification) -> None:
    for split, info in sorted(manifest["splits"].items()):
        windows = 0
        for name in info["shards"]:
            try:
                with np.load(out_dir / name, allow_pickle=False) as shard:
                    windows += int(shard["window_id"].shape[0])
            except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
                result.problems.append(f"{name}: does not open as a shard ({error})")
                return
        if windows != info["windows"]:
            result.problems.append(
                f"split {split}: shards hold {windows} windows, the manifest says {info['windows']}"
            )


def _inputs(manifest: dict, result: Verification) -> None:
    for entry in manifest["inputs"]:
        for file in entry["files"]:
            path = Path(file["path"])
            if not path.is_file():
                result.inputs_absent.append(str(path))
                continue
            result.inputs_checked += 1
            if sha256_file(path) != file["sha256"]:
                result.problems.append(f"input {path}: changed since the build")
