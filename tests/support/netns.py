"""A network namespace joined to the root namespace by a veth pair, for WebRTC journeys.

Chromium offers no loopback ICE candidates, so a browser and a server on one machine share no
address it would use. Put the browser inside the namespace and the server on the host side of
the pair: each side then has exactly one usable address, and the two reach each other over the
veth link only. The namespace has no default route, so nothing inside it can reach any other
address; the pair's addresses come from 198.18.0.0/16, in the range RFC 2544 sets aside
for tests.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import os
import shlex
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

# A /16 of the test range holds 16384 /30 links; each run starts looking at a pid-derived
# one, so two runs on one machine (two developers, two CI passes) do not pick the same.
TEST_RANGE = ipaddress.ip_network("198.18.0.0/16")
LINKS_IN_RANGE = TEST_RANGE.num_addresses // 4
IP_TIMEOUT_S = 10

_counter = itertools.count()


class VethNamespace(NamedTuple):
    name: str
    host_address: str
    namespace_address: str


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT_S, check=check
    )


def netns_unavailable() -> str | None:
    """Why this machine cannot make a network namespace with a veth pair, or None if it can."""
    if os.geteuid() != 0:
        return "making a network namespace needs root (CI runs as root)"
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed (apt-get install iproute2)"
    probe = f"mmprobe{os.getpid()}x{next(_counter)}"
    try:
        added = _ip("netns", "add", probe, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`ip netns add` could not run: {exc}"
    if added.returncode != 0:
        return f"`ip netns add` failed: {added.stderr.strip() or added.returncode}"
    _ip("netns", "del", probe, check=False)
    return None


def _addresses_in_use() -> set[ipaddress.IPv4Address]:
    shown = _ip("-4", "-o", "addr", "show")
    in_use: set[ipaddress.IPv4Address] = set()
    for line in shown.stdout.splitlines():
        fields = line.split()
        if "inet" in fields:
            in_use.add(ipaddress.IPv4Interface(fields[fields.index("inet") + 1]).ip)
    return in_use


def _free_link(start: int) -> tuple[str, str]:
    """Host and namespace addresses of the first /30 from `start` that nothing here uses."""
    in_use = _addresses_in_use()
    base = int(TEST_RANGE.network_address)
    for step in range(LINKS_IN_RANGE):
        first = base + ((start + step) % LINKS_IN_RANGE) * 4
        host, peer = ipaddress.IPv4Address(first + 1), ipaddress.IPv4Address(first + 2)
        if host not in in_use and peer not in in_use:
            return str(host), str(peer)
    raise RuntimeError(f"every /30 of {TEST_RANGE} is in use; delete stale test veths")


def _link_exists(interface: str) -> bool:
    return _ip("link", "show", "dev", interface, check=False).returncode == 0


def _namespace_exists(name: str) -> bool:
    listed = _ip("netns", "list", check=False).stdout.split()
    return name in listed


def _tear_down(name: str, host_interface: str) -> None:
    """Kill whatever still runs inside (a namespace lives on while a process is in it), then
    delete the pair from the host side (which takes its peer with it) and the namespace."""
    if _namespace_exists(name):
        for pid in _ip("netns", "pids", name, check=False).stdout.split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
    if _link_exists(host_interface):
        _ip("link", "del", "dev", host_interface, check=False)
    if _namespace_exists(name):
        _ip("netns", "del", name, check=False)
    left = [name] if _namespace_exists(name) else []
    if _link_exists(host_interface):
        left.append(host_interface)
    if left:
        raise RuntimeError(f"could not remove {', '.join(left)}; delete them with `ip` by hand")


@contextlib.contextmanager
def veth_namespace() -> Iterator[VethNamespace]:
    """A fresh namespace with `lo` up and one end of a veth pair, the other end in the root
    namespace; both ends are up with addresses of one /30. Removed on exit, even on failure.

    Yields (namespace name, host-side address, namespace-side address).
    """
    n = next(_counter)
    pid = os.getpid()
    # Interface names have at most 15 characters: "mmh" + a pid of up to 7 digits + "x" + n.
    name = f"mmns{pid}x{n}"
    host_interface, namespace_interface = f"mmh{pid}x{n}", f"mmn{pid}x{n}"
    try:
        host_address, namespace_address = _free_link(pid * 16 + n)
        _ip("netns", "add", name)
        _ip("link", "add", host_interface, "type", "veth", "peer", "name", namespace_interface)
        _ip("link", "set", namespace_interface, "netns", name)
        _ip("addr", "add", f"{host_address}/30", "dev", host_interface)
        _ip("link", "set", host_interface, "up")
        inside = ("-n", name)
        _ip(*inside, "addr", "add", f"{namespace_address}/30", "dev", namespace_interface)
        _ip(*inside, "link", "set", namespace_interface, "up")
        _ip(*inside, "link", "set", "lo", "up")
        yield VethNamespace(name, host_address, namespace_address)
    finally:
        _tear_down(name, host_interface)


def namespace_wrapper(namespace: str, program: str, directory: Path) -> Path:
    """An executable script that runs `program` with its arguments inside `namespace`.

    `ip netns exec` keeps the open file descriptors, so a program driven over inherited pipes
    (Chromium under Playwright) still talks to its parent in the root namespace."""
    script = directory / f"in-{namespace}-{Path(program).name}"
    script.write_text(
        f'#!/bin/sh\nexec ip netns exec {shlex.quote(namespace)} {shlex.quote(program)} "$@"\n'
    )
    script.chmod(0o755)
    return script
