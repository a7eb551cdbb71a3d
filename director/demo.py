"""The demo operator that `make run` creates, so a newcomer can log in at once."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction

DEMO_USERNAME = "operator"


@dataclass(frozen=True)
class DemoLogin:
    username: str
    password: str


def _login_file() -> Path:
    return Path(settings.VAR_DIR) / "demo_operator.json"


@transaction.atomic
def demo_operator_ensure() -> DemoLogin:
    """Create the demo operator once, with a random password kept in var/ (never committed).
    Run again, it prints the same login; if the file is gone, it sets a new password."""
    path = _login_file()
    password = ""
    if path.exists():
        password = json.loads(path.read_text()).get("password", "")
    user_model = get_user_model()
    user, _ = user_model.objects.select_for_update().get_or_create(
        username=DEMO_USERNAME, defaults={"is_staff": True, "is_superuser": True}
    )
    if not password or not user.check_password(password):
        password = secrets.token_urlsafe(9)
        user.set_password(password)
        user.save()
        path.write_text(json.dumps({"username": DEMO_USERNAME, "password": password}))
        path.chmod(0o600)
    return DemoLogin(username=DEMO_USERNAME, password=password)
