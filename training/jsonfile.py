"""One JSON object read from a file, with the file and the problem named when it is not one."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from training.timeline import InputError

GZIP_MAGIC = b"\x1f\x8b"


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    """The JSON object in `path` (plain or gzip); `what` names it in errors ("the config")."""
    try:
        raw = path.read_bytes()
        if raw[:2] == GZIP_MAGIC:
            raw = gzip.decompress(raw)
        document = json.loads(raw)
    except OSError as error:
        raise InputError(f"{path}: cannot read {what} ({error.strerror or error})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{path}: {what} is not valid JSON ({error})") from None
    if not isinstance(document, dict):
        raise InputError(f"{path}: {what} must be a JSON object")
    return document
