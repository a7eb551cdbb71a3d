"""The training package stands apart from the live runtime: its own pinned requirements (the
same pins as the project's), and importing all of it loads nothing of Django or the apps."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9_.\-\[\],]+)==(\S+)$")


def pins(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        match = PIN.match(line.strip())
        if match:
            found[match.group(1).lower().replace("_", "-")] = match.group(2)
    return found


def test_the_training_requirements_pin_what_the_project_pins() -> None:
    own, project = pins(ROOT / "training" / "requirements.txt"), pins(ROOT / "requirements.txt")
    assert {"numpy", "librosa", "av", "scipy"} <= set(own)
    for name, version in own.items():
        assert project.get(name) == version, (
            f"{name}: training pins {version}, project {project.get(name)}"
        )


def test_importing_every_training_module_loads_nothing_of_the_runtime() -> None:
    modules = sorted(
        "training." + ".".join(path.relative_to(ROOT / "training").with_suffix("").parts)
        for path in (ROOT / "training").rglob("*.py")
        if path.name != "__main__.py"
    )
    script = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name.removesuffix('.__init__'))\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'django', 'channels', 'celery', 'motionmix', 'devices', 'director', 'ledger'})\n"
        "print(bad)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_cli_explains_itself() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "training", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0
    for command in ("build", "verify", "report", "inspect"):
        assert command in result.stdout
