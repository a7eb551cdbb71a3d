from __future__ import annotations

import itertools
import random
from typing import Any

import pytest

from devices import services
from devices.models import Device
from devices.simulator import MODELS, THERMAL_STATES, VirtualIPhone


def _phone(index: int = 1, seed: int = 7, **state: Any) -> VirtualIPhone:
    phone = VirtualIPhone(index=index, install_prefix="sim", rng=random.Random(seed))
    for name, value in state.items():
        setattr(phone, name, value)
    return phone


# --- A phone's life on a stand --------------------------------------------------------------


def test_a_phone_off_the_charger_drains_a_little_each_interval() -> None:
    phone = _phone(battery=0.8, charging=False)

    levels = [phone.battery]
    for _ in range(20):
        phone.age()
        levels.append(phone.battery)

    drops = [before - after for before, after in itertools.pairwise(levels)]
    assert all(0.0004 <= drop <= 0.0012 + 1e-12 for drop in drops), drops
    assert phone.charging is False


def test_charging_kicks_in_once_the_battery_falls_below_12_percent() -> None:
    phone = _phone(battery=0.125, charging=False)

    steps = 0
    while not phone.charging:
        assert phone.battery >= 0.12  # not plugged in while still at or above 12 %
        phone.age()
        steps += 1
        assert steps < 100

    assert phone.battery < 0.12
    assert phone.battery > 0.12 - 0.0012 - 1e-12


def test_a_charging_phone_charges_up_to_95_percent_then_unplugs() -> None:
    phone = _phone(battery=0.5, charging=True)

    phone.age()
    assert phone.battery == pytest.approx(0.504)
    while phone.charging:
        phone.age()

    assert 0.95 <= phone.battery <= 1.0


@pytest.mark.parametrize(
    ("battery", "charging"), [(0.0, False), (0.0003, False), (0.999, True), (1.0, True)]
)
def test_the_battery_never_leaves_zero_to_one(battery: float, charging: bool) -> None:
    phone = _phone(battery=battery, charging=charging)

    for _ in range(3000):
        phone.age()
        assert 0.0 <= phone.battery <= 1.0
        assert 0 <= phone.thermal < len(THERMAL_STATES)
        assert phone.storage_free_mb >= 0


def test_an_empty_battery_is_plugged_in() -> None:
    phone = _phone(battery=0.0003, charging=False)  # less than the smallest drain

    phone.age()

    assert phone.battery == 0.0
    assert phone.charging is True


def test_phones_start_with_a_plausible_state_and_take_turns_between_models() -> None:
    phones = [_phone(index=i, seed=i) for i in range(1, 5)]

    assert [p.model for p in phones] == [MODELS[0][0], MODELS[1][0], MODELS[0][0], MODELS[1][0]]
    for phone in phones:
        assert 0.55 <= phone.battery <= 1.0
        assert -0.4 <= phone.clock_offset_s <= 0.4
        assert phone.install_id == f"sim-{phone.index}"
        assert phone.name == f"Cam {phone.index}"


# --- Its bodies pass the real API -----------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("index", [1, 2])
def test_the_simulators_bodies_pass_the_real_api(device_api: Any, index: int) -> None:
    phone = _phone(index=index, seed=index)

    registered = device_api.post("devices/register", phone.register_body(device_api.code))
    assert registered.status_code == 201, registered.content
    token = registered.json()["token"]

    beat = device_api.post("devices/heartbeat", phone.heartbeat_body(), token=token)
    assert beat.status_code == 200, beat.content

    device = Device.objects.get(install_id=phone.install_id)
    assert device.model == phone.model
    assert device.lenses == phone.lenses
    assert device.battery == pytest.approx(phone.battery, abs=1e-4)


@pytest.mark.django_db
def test_an_aged_phones_heartbeats_still_pass_the_real_api(device_api: Any) -> None:
    phone = _phone(battery=0.2, seed=3)
    token = device_api.post("devices/register", phone.register_body(device_api.code)).json()[
        "token"
    ]

    for _ in range(10):
        for _ in range(150):
            phone.age()
        response = device_api.post("devices/heartbeat", phone.heartbeat_body(), token=token)
        assert response.status_code == 200, response.content

    device = Device.objects.get(install_id=phone.install_id)
    assert device.thermal == THERMAL_STATES[phone.thermal]
    assert device.charging is phone.charging
    assert device.battery == pytest.approx(phone.battery, abs=1e-4)


@pytest.mark.django_db
def test_a_phone_says_where_it_stands_once_and_then_leaves_it_to_the_operator(
    device_api: Any,
) -> None:
    phone = _phone(index=2, seed=2)
    token = device_api.post("devices/register", phone.register_body(device_api.code)).json()[
        "token"
    ]
    assert (
        device_api.post("devices/heartbeat", phone.heartbeat_body(), token=token).status_code == 200
    )
    phone.beats += 1  # as the simulator counts a beat the server took
    device = Device.objects.get(install_id=phone.install_id)
    assert device.azimuth_deg == phone.placement["azimuth_deg"]
    assert device.distance_m == phone.placement["distance_m"]
    assert device.placement_source == Device.PlacementSource.DEVICE

    services.device_place(device_id=device.pk, azimuth_deg=123.0)
    assert "placement" not in phone.heartbeat_body()
    device_api.post("devices/heartbeat", phone.heartbeat_body(), token=token)
    device.refresh_from_db()
    assert device.azimuth_deg == 123.0
