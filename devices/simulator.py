"""Virtual iPhones that use the public device API only, as the capture app does.

Each one pairs with the current code, registers, then heartbeats at the interval the server
asks for. Batteries drain (and charge once plugged in), phones warm up and cool down, and each
phone's clock is off from the server's by a few hundred ms, as real phones' clocks are.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

logger = logging.getLogger("motionmix.simulator")

MODELS: list[tuple[str, list[dict[str, Any]]]] = [
    (
        "iPhone 15 Pro",
        [
            {"id": "ultra_wide", "zoom": 0.5, "hfov_deg": 106.0},
            {"id": "wide", "zoom": 1.0, "hfov_deg": 73.0},
            {"id": "tele", "zoom": 3.0, "hfov_deg": 27.0},
        ],
    ),
    (
        "iPhone 16 Pro Max",
        [
            {"id": "ultra_wide", "zoom": 0.5, "hfov_deg": 106.0},
            {"id": "wide", "zoom": 1.0, "hfov_deg": 73.0},
            {"id": "tele", "zoom": 5.0, "hfov_deg": 16.0},
        ],
    ),
]
THERMAL_STATES = ["nominal", "fair", "serious", "critical"]

CodeSource = Callable[[], Awaitable[str]]


@dataclass
class VirtualIPhone:
    index: int
    install_prefix: str
    rng: random.Random
    name: str = ""
    model: str = ""
    lenses: list[dict[str, Any]] = field(default_factory=list)
    battery: float = 1.0
    charging: bool = False
    thermal: int = 0
    lens: str = "wide"
    zoom: float = 1.0
    storage_free_mb: int = 64_000
    clock_offset_s: float = 0.0
    token: str = ""
    device_id: str = ""
    interval_s: float = 2.0
    beats: int = 0
    errors: int = 0

    def __post_init__(self) -> None:
        self.name = f"Cam {self.index}"
        self.model, self.lenses = MODELS[(self.index - 1) % len(MODELS)]
        self.battery = round(self.rng.uniform(0.55, 1.0), 3)
        self.storage_free_mb = self.rng.randint(20_000, 120_000)
        self.clock_offset_s = self.rng.uniform(-0.4, 0.4)

    @property
    def install_id(self) -> str:
        return f"{self.install_prefix}-{self.index}"

    def device_clock(self) -> float:
        return time.time() + self.clock_offset_s

    def register_body(self, code: str) -> dict[str, Any]:
        return {
            "pairing_code": code,
            "install_id": self.install_id,
            "name": self.name,
            "kind": "iphone",
            "model": self.model,
            "os_version": "18.1",
            "app_version": "1.0.0-sim",
            "lenses": self.lenses,
        }

    def heartbeat_body(self) -> dict[str, Any]:
        return {
            "sent_at": self.device_clock(),
            "battery": round(self.battery, 4),
            "charging": self.charging,
            "thermal": THERMAL_STATES[self.thermal],
            "lens": self.lens,
            "zoom": self.zoom,
            "orientation": "landscape_left",
            "flip": {"horizontal": False, "vertical": False},
            "storage_free_mb": self.storage_free_mb,
            "fps": 30.0,
        }

    def age(self) -> None:
        """One interval of a phone's life on a stand."""
        if self.charging:
            self.battery = min(1.0, self.battery + 0.004)
            if self.battery >= 0.95:
                self.charging = False
        else:
            self.battery = max(0.0, self.battery - self.rng.uniform(0.0004, 0.0012))
            if self.battery < 0.12:
                self.charging = True  # the assistant plugs it in
        drift = self.rng.random()
        if drift < 0.03 and self.thermal < 3:
            self.thermal += 1
        elif drift > 0.9 and self.thermal > 0:
            self.thermal -= 1
        self.storage_free_mb = max(0, self.storage_free_mb - self.rng.randint(0, 3))


class Simulator:
    def __init__(
        self,
        *,
        url: str,
        count: int,
        code_source: CodeSource,
        install_prefix: str = "sim-iphone",
        seed: int | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.code_source = code_source
        rng = random.Random(seed)  # noqa: S311 - a simulation, not a secret
        self.phones = [
            VirtualIPhone(
                index=i + 1,
                install_prefix=install_prefix,
                rng=random.Random(rng.random()),  # noqa: S311
            )
            for i in range(count)
        ]
        self.stopping = asyncio.Event()

    async def run(self, *, duration_s: float | None = None) -> None:
        limits = httpx.Limits(max_connections=max(10, len(self.phones)))
        async with httpx.AsyncClient(base_url=self.url, timeout=10.0, limits=limits) as client:
            tasks = [asyncio.create_task(self._live(client, phone)) for phone in self.phones]
            try:
                if duration_s is None:
                    await self.stopping.wait()
                else:
                    await asyncio.wait_for(self.stopping.wait(), timeout=duration_s)
            except TimeoutError:
                pass
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    def stop(self) -> None:
        self.stopping.set()

    async def _register(self, client: httpx.AsyncClient, phone: VirtualIPhone) -> None:
        backoff = 0.5
        while not self.stopping.is_set():
            try:
                code = await self.code_source()
                response = await client.post(
                    "/api/v1/devices/register", json=phone.register_body(code)
                )
            except httpx.HTTPError as exc:
                logger.info("%s: server not reachable (%s); retrying", phone.name, exc)
            else:
                if response.status_code in (200, 201):
                    body = response.json()
                    phone.token = body["token"]
                    phone.device_id = body["device_id"]
                    phone.interval_s = float(body["heartbeat_interval_s"])
                    logger.info("%s registered as %s", phone.name, phone.device_id)
                    return
                phone.errors += 1
                if response.status_code == 429:
                    backoff = float(response.headers.get("Retry-After", "5"))
                logger.warning(
                    "%s: register answered %s %s", phone.name, response.status_code, response.text
                )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)

    async def _live(self, client: httpx.AsyncClient, phone: VirtualIPhone) -> None:
        # Phones come up at slightly different moments, as real ones do.
        await asyncio.sleep(phone.rng.uniform(0, 0.5))
        await self._register(client, phone)
        while not self.stopping.is_set():
            try:
                response = await client.post(
                    "/api/v1/devices/heartbeat",
                    json=phone.heartbeat_body(),
                    headers={"Authorization": f"Bearer {phone.token}"},
                )
            except httpx.HTTPError as exc:
                phone.errors += 1
                logger.info("%s: heartbeat failed (%s)", phone.name, exc)
            else:
                if response.status_code == 401:
                    logger.warning("%s: token refused; registering again", phone.name)
                    await self._register(client, phone)
                    continue
                if response.status_code == 200:
                    phone.beats += 1
                else:
                    phone.errors += 1
                    logger.warning(
                        "%s: heartbeat answered %s %s",
                        phone.name,
                        response.status_code,
                        response.text,
                    )
            phone.age()
            await asyncio.sleep(phone.interval_s * phone.rng.uniform(0.9, 1.1))
