"""A session bundle's files by relative name, whether in its folder or in its zip, and the
checked JSON reads the bundle reader shares (every error names the file, key or line)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from training.timeline import InputError

_READ = 1 << 20


class BundleStore:
    """The bundle's files by relative name, whether in a folder or in a zip."""

    def __init__(self, path: Path, cache_dir: Path) -> None:
        self.path = path
        self.cache_dir = cache_dir
        self.is_zip = path.is_file()
        self.top = ""
        self._names: set[str] = set()
        self._zip_sha256: str | None = None
        if self.is_zip:
            self._open_zip()
        else:
            self._names = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()}

    def _open_zip(self) -> None:
        try:
            with zipfile.ZipFile(self.path) as archive:
                members = [i.filename for i in archive.infolist() if not i.is_dir()]
        except (zipfile.BadZipFile, OSError) as exc:
            raise InputError(f"{self.path}: not a readable zip ({exc})") from exc
        tops = {m.split("/", 1)[0] for m in members}
        if len(tops) != 1 or any("/" not in m for m in members):
            raise InputError(f"{self.path}: a bundle zip holds one top-level folder")
        self.top = tops.pop()
        self._names = {m.split("/", 1)[1] for m in members}

    def label(self, name: str) -> str:
        return f"{self.path}:{self.top}/{name}" if self.is_zip else str(self.path / name)

    def has(self, name: str) -> bool:
        return name in self._names

    @contextmanager
    def open(self, name: str) -> Iterator[IO[bytes]]:
        if not self.has(name):
            raise InputError(f"{self.label(name)}: missing from the bundle")
        if not self.is_zip:
            with (self.path / name).open("rb") as handle:
                yield handle
            return
        with zipfile.ZipFile(self.path) as archive, archive.open(f"{self.top}/{name}") as handle:
            yield handle

    def lines(self, name: str) -> Iterator[tuple[int, str]]:
        """(line number, text) of a UTF-8 NDJSON member, streamed."""
        with self.open(name) as raw:
            text = io.TextIOWrapper(raw, encoding="utf-8", newline="\n")
            try:
                for number, line in enumerate(text, start=1):
                    if line.strip():
                        yield number, line
            except UnicodeDecodeError as exc:
                raise InputError(f"{self.label(name)}: not UTF-8 ({exc.reason})") from exc

    def sha256(self, name: str) -> str:
        with self.open(name) as handle:
            return _digest(handle)

    def local_path(self, name: str, sha256: str) -> Path:
        """A file on disk with the member's bytes (a zip's is extracted once into the cache)."""
        if not self.is_zip:
            return self.path / name
        if self._zip_sha256 is None:
            self._zip_sha256 = _file_sha256(self.path)
        target = self.cache_dir / "bundles" / self._zip_sha256 / name
        if target.is_file() and _file_sha256(target) == sha256:
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")
        with self.open(name) as source, partial.open("wb") as out:
            while block := source.read(_READ):
                out.write(block)
        os.replace(partial, target)
        return target

    def files(self) -> list[tuple[str, Path]]:
        if self.is_zip:
            return [(self.path.name, self.path)]
        return [(name, self.path / name) for name in sorted(self._names)]


def _file_sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return _digest(handle)


def _digest(handle: IO[bytes]) -> str:
    digest = hashlib.sha256()
    while block := handle.read(_READ):
        digest.update(block)
    return digest.hexdigest()


# --- JSON helpers ------------------------------------------------------------------------------


def loads_json(text: str | bytes, where: str) -> Any:
    try:
        return json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{where}: not valid JSON ({exc})") from exc


def get_field(obj: Any, key: str, kinds: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise InputError(f"{where}: missing field {key!r}")
    value = obj[key]
    allowed = kinds if isinstance(kinds, tuple) else (kinds,)
    if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
        raise InputError(f"{where}: field {key!r} has the wrong type")
    return value


def get_number(obj: Any, key: str, where: str) -> float:
    return float(get_field(obj, key, (int, float), where))
