"""Project-wide contracts: layering, deploy checks, settings modes, login everywhere."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _run(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_the_import_contracts_hold() -> None:
    result = _run([str(BIN / "lint-imports")])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 2 kept, 0 broken" in result.stdout


def test_check_deploy_is_clean_once_the_production_variables_are_set(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DJANGO_", "MOTIONMIX_")) and k not in ("DATABASE_URL", "REDIS_URL")
    }
    env.update(
        DJANGO_SECRET_KEY="x" * 64 + "-production-secret-for-the-check-only",
        DJANGO_ALLOWED_HOSTS="director.example.com",
        DJANGO_CSRF_TRUSTED_ORIGINS="https://director.example.com",
        MOTIONMIX_VAR_DIR=str(tmp_path),
    )
    result = _run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], env=env
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_without_the_production_secret_check_deploy_complains(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    env["MOTIONMIX_VAR_DIR"] = str(tmp_path)
    result = _run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], env=env
    )
    assert result.returncode != 0
    assert "SESSION_COOKIE_SECURE" in result.stdout + result.stderr


def _settings_in_subprocess(env: dict[str, str], expr: str) -> str:
    code = (
        "import django, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'motionmix.settings');"
        f"django.setup(); from django.conf import settings as s; print({expr})"
    )
    result = _run([sys.executable, "-c", code], env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_the_embedded_default_needs_no_services(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "CI")} | {
        "MOTIONMIX_VAR_DIR": str(tmp_path)
    }
    out = _settings_in_subprocess(
        env,
        "s.DATABASES['default']['ENGINE'], s.CHANNEL_LAYERS['default']['BACKEND'],"
        " s.CELERY_TASK_ALWAYS_EAGER, s.MOTIONMIX_EMBEDDED_TICKER, s.DEBUG,"
        " s.SESSION_COOKIE_SECURE",
    )
    # DEBUG stays off even here: the development server may face the LAN for the phones.
    assert out == (
        "django.db.backends.sqlite3 channels.layers.InMemoryChannelLayer True True False False"
    )


def test_the_scaled_services_come_from_the_environment(tmp_path: Path) -> None:
    env = dict(os.environ) | {
        "MOTIONMIX_VAR_DIR": str(tmp_path),
        "DATABASE_URL": "postgres://u@db.internal:5432/mm",
        "REDIS_URL": "redis://cache.internal:6379/0",
    }
    out = _settings_in_subprocess(
        env,
        "s.DATABASES['default']['ENGINE'], s.CHANNEL_LAYERS['default']['BACKEND'],"
        " s.CELERY_BROKER_URL, s.CELERY_TASK_ALWAYS_EAGER, s.MOTIONMIX_EMBEDDED_TICKER",
    )
    assert out == (
        "django.db.backends.postgresql channels_redis.core.RedisChannelLayer"
        " redis://cache.internal:6379/0 False False"
    )


def test_the_embedded_sqlite_database_runs_in_wal_mode(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")} | {
        "MOTIONMIX_VAR_DIR": str(tmp_path)
    }
    out = _settings_in_subprocess(
        env,
        "__import__('django.db').db.connection.cursor().execute('PRAGMA journal_mode')"
        ".fetchone()[0]",
    )
    assert out == "wal"
    assert (tmp_path / "motionmix.sqlite3").exists()


def _patterns(resolver: URLResolver, prefix: str = "") -> list[tuple[str, URLPattern]]:
    found = []
    for entry in resolver.url_patterns:
        if isinstance(entry, URLResolver):
            found += _patterns(entry, prefix + str(entry.pattern))
        else:
            found.append((prefix + str(entry.pattern), entry))
    return found


OPEN_PREFIXES = ("accounts/login/", "admin/", "api/v1/")


@pytest.mark.django_db
def test_every_operator_page_requires_a_login(client) -> None:  # type: ignore[no-untyped-def]
    checked = 0
    for route, _pattern in _patterns(get_resolver()):
        if route.startswith(OPEN_PREFIXES) or "<" in route or "(?P" in route:
            continue
        path = "/" + route.lstrip("^").rstrip("$")
        response = client.get(path)
        assert response.status_code in (302, 405), (path, response.status_code)
        if response.status_code == 302:
            assert response["Location"].startswith("/accounts/login/"), path
        checked += 1
    assert checked >= 3
