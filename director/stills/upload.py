"""Receiving a still's bytes: streamed to a temporary file and hashed on the way, never held
in memory whole, and cut off as soon as it passes the size limit."""

from __future__ import annotations

import errno
import hashlib
import logging
from dataclasses import dataclass
from typing import Any

from django.core.files import File
from django.core.files.storage import Storage, default_storage
from django.core.files.uploadedfile import TemporaryUploadedFile
from django.core.files.uploadhandler import FileUploadHandler, SkipFile, StopUpload
from django.http import HttpRequest

FILE_FIELD = "file"
META_FIELD = "meta"
# The meta part is a small JSON object; some HTTP stacks send it as a file part of its own.
META_MAX_BYTES = 64 * 1024

logger = logging.getLogger(__name__)


@dataclass
class ReceivedStill:
    """An uploaded file on local disk, with what was measured while it streamed in.

    `file` is a Django TemporaryUploadedFile: storages move it into place rather than copy it
    where they can, and closing it deletes whatever is left of the temporary file.
    """

    file: TemporaryUploadedFile
    sha256: str
    size: int

    @property
    def path(self) -> str:
        return str(self.file.temporary_file_path())

    def close(self) -> None:
        self.file.close()

    @classmethod
    def from_bytes(cls, data: bytes, name: str = "still") -> ReceivedStill:
        """The same thing from bytes in hand, for callers that are not HTTP (and tests)."""
        file = TemporaryUploadedFile(name, "application/octet-stream", len(data), None)
        file.write(data)
        file.flush()
        file.seek(0)
        return cls(file=file, sha256=hashlib.sha256(data).hexdigest(), size=len(data))


class StillUploadHandler(FileUploadHandler):
    """Takes the `file` part into a temporary file, hashing it as it arrives; skips any other
    file part except a `meta` sent as a file, which it keeps (small) as text.

    After parsing, `too_large` says the file went past `max_bytes` (the parse stopped there and
    the partial file is already deleted), `received` holds the file, `meta_text` a meta that
    came as a file part.
    """

    chunk_size = 256 * 1024

    def __init__(self, request: HttpRequest, *, max_bytes: int) -> None:
        super().__init__(request)
        self.max_bytes = max_bytes
        self.too_large = False
        self.disk_full: DiskFull | None = None
        self.received: ReceivedStill | None = None
        self.meta_text: str | None = None
        self._field: str | None = None
        self._file: TemporaryUploadedFile | None = None
        self._hash: Any = None
        self._size = 0
        self._meta = bytearray()

    def new_file(
        self,
        field_name: str,
        file_name: str,
        content_type: str,
        content_length: int | None,
        charset: str | None = None,
        content_type_extra: dict[str, str] | None = None,
    ) -> None:
        if field_name == FILE_FIELD and self.received is None and self._file is None:
            super().new_file(field_name, file_name, content_type, content_length, charset)
            self._field = FILE_FIELD
            self._file = TemporaryUploadedFile(file_name or "still", content_type, 0, charset)
            self._hash = hashlib.sha256()
            self._size = 0
        elif field_name == META_FIELD and self.meta_text is None:
            self._field = META_FIELD
            self._meta = bytearray()
        else:
            # A second file, or a part nobody asked for: not written anywhere.
            raise SkipFile()

    def receive_data_chunk(self, raw_data: bytes, start: int) -> None:
        if self._field == META_FIELD:
            self._meta += raw_data
            if len(self._meta) > META_MAX_BYTES:
                self.meta_text = ""  # parsed as bad JSON; a meta this large is no meta
                raise SkipFile()
            return None
        assert self._file is not None
        self._size += len(raw_data)
        if self._size > self.max_bytes:
            self.too_large = True
            self._discard()
            # Stop reading: nothing past the limit is written or hashed.
            raise StopUpload(connection_reset=True)
        self._hash.update(raw_data)
        try:
            self._file.write(raw_data)
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            # The temporary folder is full: keep nothing of it, read no further.
            self.disk_full = DiskFull.of(exc, where="the upload's temporary folder")
            self._discard()
            raise StopUpload(connection_reset=True) from None
        return None

    def file_complete(self, file_size: int) -> None:
        if self._field == META_FIELD:
            self._field = None
            self.meta_text = bytes(self._meta).decode("utf-8", errors="replace")
            return None
        if self._file is None:
            return None
        self._file.flush()
        self._file.seek(0)
        self._file.size = file_size
        self.received = ReceivedStill(
            file=self._file, sha256=self._hash.hexdigest(), size=self._size
        )
        self._file = None
        self._field = None
        # Not handed to request.FILES: the view takes the file from `received`, and closes it.
        return None

    def upload_interrupted(self) -> None:
        self._discard()

    def _discard(self) -> None:
        if self._file is not None:
            self._file.close()  # deletes the temporary file
            self._file = None
        self._field = None

    def discard_all(self) -> None:
        """Delete every temporary file this handler made (the view's `finally`)."""
        self._discard()
        if self.received is not None:
            self.received.close()


# --- A full disk ------------------------------------------------------------------------------
# Kept apart from the size and duplicate checks above: what happens when a write finds the
# disk (or the quota) full. The device is answered 507 and keeps its copy; nothing partial is
# left behind, so the same upload later, once there is room, is stored whole.

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS


class DiskFull(Exception):
    """No room to store an upload (507 insufficient_storage); nothing of it was kept."""

    @classmethod
    def of(cls, exc: OSError, *, where: str) -> DiskFull:
        return cls(
            f"The server has no room left in {where} ({exc.strerror or exc}); nothing of this "
            "upload was kept. Keep the file on the device and upload it again later; the "
            "operator must free space on the server."
        )


def storage_save_whole(name: str, content: File, *, storage: Storage | None = None) -> str:
    """`storage.save(name, content)`, but a write that finds the disk full removes what it
    had written and raises DiskFull: a half-written file is never left under the name."""
    storage = storage or default_storage
    name = storage.get_available_name(name)
    try:
        return storage.save(name, content)
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        try:
            if storage.exists(name):
                storage.delete(name)
        except OSError:
            logger.exception("could not remove the partial %s after a full disk", name)
        raise DiskFull.of(exc, where="the media storage") from exc
