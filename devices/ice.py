"""Which local addresses our WebRTC peers offer as ICE host candidates.

aioice offers every address of every interface except loopback, and has no option to change
that. On one machine (tests, the embedded default with the simulator) loopback is exactly the
address both peers share, and in a network namespace it may be the only one; so the addresses
can be set with MOTIONMIX_ICE_HOST_ADDRESSES (comma-separated IPs; unset or empty: aioice's
own choice). Both the server's relay and the simulator read the same variable.

No Django here: the relay and the simulator both import this module.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable

import aioice.ice

ENV_VAR = "MOTIONMIX_ICE_HOST_ADDRESSES"

_AIOICE_DEFAULT: Callable[[bool, bool], list[str]] = aioice.ice.get_host_addresses


def ice_host_addresses_from_env() -> list[str]:
    """The addresses in MOTIONMIX_ICE_HOST_ADDRESSES; [] when unset or empty. Raises
    ValueError naming the variable and the bad entry when one is not an IP address."""
    raw = os.environ.get(ENV_VAR, "")
    addresses = [item.strip() for item in raw.split(",") if item.strip()]
    for address in addresses:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise ValueError(
                f"{ENV_VAR} holds {address!r}, which is not an IP address: give "
                "comma-separated IPs such as 127.0.0.1,10.0.0.5, or leave it empty."
            ) from None
    return addresses


def ice_host_addresses_apply(addresses: list[str]) -> None:
    """Make every ICE agent in this process offer `addresses` as its host candidates
    (filtered by the family the agent asks for); [] puts aioice's own choice back.

    Process-wide: it replaces `aioice.ice.get_host_addresses`, which agents call when they
    gather, so it affects peer connections that gather afterwards."""
    if not addresses:
        aioice.ice.get_host_addresses = _AIOICE_DEFAULT
        return
    parsed = [ipaddress.ip_address(address) for address in addresses]

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [
            str(ip)
            for ip in parsed
            if (ip.version == 4 and use_ipv4) or (ip.version == 6 and use_ipv6)
        ]

    aioice.ice.get_host_addresses = get_host_addresses
