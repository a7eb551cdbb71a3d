"""Skip a test whose real component is absent; in CI (MOTIONMIX_REQUIRE_ALL=1) fail instead,
because CI installs everything and a silent skip there would hide a regression."""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest

CHROMIUM = "/usr/bin/chromium"


def missing(reason: str) -> NoReturn:
    if os.environ.get("MOTIONMIX_REQUIRE_ALL") == "1":
        pytest.fail(f"required in CI but missing: {reason}")
    pytest.skip(reason)


def require_chromium() -> str:
    if not os.path.exists(CHROMIUM):
        missing("Debian chromium is not installed (apt-get install chromium)")
    return CHROMIUM


def require_redis() -> str:
    url = os.environ.get("REDIS_URL", "")
    if not url:
        pytest.skip("needs REDIS_URL: runs in the scaled CI pass")
    return url


def require_binary(name: str) -> str:
    path = shutil.which(name)
    if not path:
        missing(f"{name} is not installed")
    return path
