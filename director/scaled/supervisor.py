"""The scaled profile's supervisor: every process of `make run-scaled`, started in order,
watched, restarted if one dies, and stopped in order on Ctrl-C or SIGTERM.

- relay:  `manage.py serve` with MOTIONMIX_ROLE=relay, the one process holding the hero relay;
- web-1, web-2: `manage.py serve` with MOTIONMIX_ROLE=web (WHIP/WHEP forwarded to the relay);
- worker, beat: Celery;
- the reverse proxy (proxy.py) on this process's own loop, the address people open;
- sim: with `simulate`, the virtual iPhones (and the stand-in operator) against the proxy.

Each child runs in a session of its own, so a terminal's Ctrl-C reaches only the supervisor,
which stops the children in order (the phones first, so they unpublish; the relay after the
web processes; Celery last); whatever a child forked goes with its process group. On Linux
each child also gets SIGTERM if the supervisor itself dies, so nothing is left orphaned.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final

import httpx

from director.scaled.proxy import Backend, ReverseProxy

logger = logging.getLogger(__name__)
# Its request log would print every readiness probe.
logging.getLogger("httpx").setLevel(logging.WARNING)

READY_S: Final = 90.0
STOP_S: Final = 10.0
RESTART_MAX_S: Final = 10.0
PR_SET_PDEATHSIG: Final = 1


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the supervisor goes (however it goes)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    ping_url: str | None = None  # answered once the process serves
    restart: bool = True
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started_at: float = 0.0
    log: IO[bytes] | None = None
    pumps: list[threading.Thread] = field(default_factory=list)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class Plan:
    """What to start: the children (in start order) and the proxy's backends."""

    children: list[Child]
    web: list[Backend]
    relay: Backend | None
    host: str
    port: int
    stop_order: list[list[str]]  # stages, each stopped together
    log_dir: Path | None = None


class Supervisor:
    def __init__(self, plan: Plan, *, status_file: Path | None = None) -> None:
        self.plan = plan
        self.status_file = status_file
        self.proxy = ReverseProxy(
            web=plan.web,
            relay=plan.relay,
            trust_forwarded=os.environ.get("MOTIONMIX_PROXY_TRUST_FORWARDED") == "1",
        )
        self.stopping = asyncio.Event()
        self.port = plan.port

    # -- children ---------------------------------------------------------------------------

    def _spawn(self, child: Child) -> None:
        out: int | IO[bytes]
        if self.plan.log_dir is not None:
            self.plan.log_dir.mkdir(parents=True, exist_ok=True)
            child.log = (self.plan.log_dir / f"{child.name}.log").open("ab")
            out = child.log
        else:
            out = subprocess.PIPE
        child.proc = subprocess.Popen(  # noqa: S603 - our own manage.py and Celery
            child.argv,
            env=child.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # prctl only: nothing that takes a lock
        )
        child.started_at = time.monotonic()
        if out is subprocess.PIPE:
            assert child.proc.stdout is not None
            pump = threading.Thread(
                target=_prefix_lines, args=(child.proc.stdout, child.name), daemon=True
            )
            pump.start()
            child.pumps.append(pump)

    async def _wait_ready(self, children: list[Child]) -> None:
        deadline = time.monotonic() + READY_S
        async with httpx.AsyncClient(timeout=1.0) as client:
            for child in children:
                if child.ping_url is None:
                    continue
                while True:
                    if not child.running:
                        raise RuntimeError(f"{child.name} exited while starting{self._see(child)}")
                    with contextlib.suppress(httpx.HTTPError):
                        if (await client.get(child.ping_url)).status_code == 200:
                            break
                    if time.monotonic() > deadline:
                        raise RuntimeError(
                            f"{child.name} did not answer {child.ping_url} in {READY_S:.0f} s"
                            f"{self._see(child)}"
                        )
                    await asyncio.sleep(0.1)

    def _see(self, child: Child) -> str:
        if self.plan.log_dir is None:
            return " (its output is above)"
        return f"; see {self.plan.log_dir / (child.name + '.log')}"

    async def _watch(self) -> None:
        """Restart a child that dies, with a growing pause; a child that keeps dying at once
        is still retried, at most every RESTART_MAX_S."""
        while not self.stopping.is_set():
            for child in self.plan.children:
                if self.stopping.is_set() or child.proc is None or child.running:
                    continue
                code = child.proc.returncode
                if not child.restart:
                    logger.warning("%s exited (%s); not restarted", child.name, code)
                    child.proc = None
                    continue
                quick = time.monotonic() - child.started_at < 30
                child.restarts = child.restarts + 1 if quick else 1
                pause = min(RESTART_MAX_S, 0.5 * 2**child.restarts)
                _say(f"{child.name} exited ({code}); restarting in {pause:.1f} s")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), pause)
                if not self.stopping.is_set():
                    self._spawn(child)
                    self._write_status()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), 0.5)

    async def _stop_children(self) -> None:
        by_name = {child.name: child for child in self.plan.children}
        for stage in self.plan.stop_order:
            group = [by_name[name] for name in stage if name in by_name]
            await asyncio.gather(*(asyncio.to_thread(_stop, child) for child in group))

    # -- the whole ---------------------------------------------------------------------------

    def _write_status(self) -> None:
        if self.status_file is None:
            return
        status = {
            "url": f"http://{self.plan.host}:{self.port}",
            "pid": os.getpid(),
            "backends": {b.name: b.url for b in self.plan.web},
            "relay": self.plan.relay.url if self.plan.relay else None,
            "children": {c.name: c.proc.pid for c in self.plan.children if c.proc is not None},
        }
        tmp = self.status_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(status, indent=2))
        tmp.replace(self.status_file)

    async def run(self, *, banner: str, after_ready: list[Child]) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stopping.set)
        watcher: asyncio.Task[None] | None = None
        try:
            servers = [c for c in self.plan.children if c not in after_ready]
            for child in servers:
                self._spawn(child)
            ready = asyncio.create_task(self._wait_ready(servers))
            stop = asyncio.create_task(self.stopping.wait())
            await asyncio.wait({ready, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not ready.done():
                ready.cancel()
                return 1
            stop.cancel()
            ready.result()
            self.port = await self.proxy.start(self.plan.host, self.plan.port)
            for child in after_ready:
                self._spawn(child)
            self._write_status()
            sys.stdout.write(banner.format(port=self.port))
            sys.stdout.flush()
            watcher = asyncio.create_task(self._watch())
            await self.stopping.wait()
            return 0
        except RuntimeError as exc:
            _say(f"stopping: {exc}")
            return 1
        except OSError as exc:
            _say(
                f"stopping: the proxy could not listen on {self.plan.host}:{self.plan.port}: {exc}"
            )
            return 1
        finally:
            self.stopping.set()
            _say("stopping every process…")
            if watcher is not None:
                await watcher
            sim = [c for c in self.plan.children if c.name == "sim"]
            await asyncio.gather(*(asyncio.to_thread(_stop, child) for child in sim))
            await self.proxy.close()
            await self._stop_children()
            if self.status_file is not None:
                with contextlib.suppress(FileNotFoundError):
                    self.status_file.unlink()
            _say("stopped.")


def _stop(child: Child) -> None:
    proc = child.proc
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_S)
        except subprocess.TimeoutExpired:
            _say(f"{child.name} did not stop in {STOP_S:.0f} s; killing it")
    if proc is not None:
        # Its own group: whatever it forked (Celery's pool, a beat analysis) goes with it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
    for pump in child.pumps:
        pump.join(timeout=2)
    if child.log is not None:
        child.log.close()


def _prefix_lines(stream: IO[bytes], name: str) -> None:
    with stream:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", errors="replace").rstrip("\n")
            sys.stdout.write(f"{name:>6} | {line}\n")
            sys.stdout.flush()


def _say(message: str) -> None:
    sys.stdout.write(f"  run-scaled: {message}\n")
    sys.stdout.flush()
