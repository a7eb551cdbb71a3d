"""The demo logins that `make run` creates, so a newcomer can log in at once: the operator, and
the simulated stand-in operator that decides Ghost's proposals while nobody is at the desk."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction

DEMO_USERNAME = "operator"
# A login of its own, so the ledger shows its decisions `by: stand-in`, never the operator's.
STAND_IN_USERNAME = "stand-in"


@dataclass(frozen=True)
class DemoLogin:
    username: str
    password: str


def _login_file() -> Path:
    return Path(settings.VAR_DIR) / "demo_operator.json"


def stand_in_login_file() -> Path:
    """Where the stand-in's login is kept (JSON {"username", "password"}, mode 600)."""
    return Path(settings.VAR_DIR) / "demo_stand_in.json"


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, from the first byte on."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    path.chmod(0o600)  # a file that was there before keeps its old mode through os.open


def _ensure(*, username: str, path: Path, admin: bool) -> DemoLogin:
    """Create the user once, with a random password kept in `path` (never committed). Run again,
    it returns the same login; if the file is gone, it sets a new password."""
    password = ""
    if path.exists():
        try:
            password = str(json.loads(path.read_text()).get("password", ""))
        except (ValueError, AttributeError):
            password = ""  # unreadable: a new password replaces it
    user_model = get_user_model()
    user, _ = user_model.objects.select_for_update(no_key=True).get_or_create(
        username=username, defaults={"is_staff": admin, "is_superuser": admin}
    )
    demoted = not admin and (user.is_staff or user.is_superuser)
    if demoted:
        # The stand-in decides proposals; it never gets the admin.
        user.is_staff = user.is_superuser = False
    if not password or not user.check_password(password):
        password = secrets.token_urlsafe(9)
        user.set_password(password)
        user.save()
        _write_private(path, json.dumps({"username": username, "password": password}))
    elif demoted:
        user.save()
    return DemoLogin(username=username, password=password)


@transaction.atomic
def demo_operator_ensure() -> DemoLogin:
    """Create the demo operator once, with a random password kept in var/ (never committed).
    Run again, it prints the same login; if the file is gone, it sets a new password."""
    return _ensure(username=DEMO_USERNAME, path=_login_file(), admin=True)


@transaction.atomic
def demo_stand_in_ensure() -> DemoLogin:
    """Create the stand-in's login once (no staff, no superuser), with a random password kept
    in var/demo_stand_in.json; `simulate_devices --stand-in` reads it from there."""
    return _ensure(username=STAND_IN_USERNAME, path=stand_in_login_file(), admin=False)
