"""The `serve` command as `make run` uses it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.server import ROOT, free_port, running_server


def test_a_second_embedded_server_on_the_same_state_is_refused(tmp_path: Path) -> None:
    with running_server(tmp_path) as server:
        if not server.env.get("REDIS_URL"):
            second = subprocess.run(
                [sys.executable, str(ROOT / "manage.py"), "serve", "--port", str(free_port())],
                env=server.env,
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert second.returncode == 1
            assert "is already serving from" in second.stderr
        # The first one is unharmed.
        assert server.server is not None and server.server.poll() is None


def test_serve_prints_the_url_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    with running_server(tmp_path) as server:
        assert server.server is not None
        server.stop_server()
        log = server.log()
    assert f"Open:   http://localhost:{server.port}/" in log
    assert "Mode:" in log and "Ledger:" in log
