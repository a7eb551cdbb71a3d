"""The scaled profile (`make run-scaled`): `manage.py run_scaled` brought up on a fresh
PostgreSQL database and Redis, with its two web processes behind the built-in proxy, the one
hero relay process, and a Celery worker and beat. Runs in the scaled CI pass only."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets

from devices.ice import ice_host_addresses_apply
from director.scaled.profile import shared_env
from tests.support.api import heartbeat_body, register_body
from tests.support.scaled import ScaledProfile, running_profile
from tests.support.server import ROOT
from tests.support.webrtc import CodedTrack, Sink, answer, offer_publish, offer_watch

SDP = "application/sdp"
SOURCE = 7


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for every purpose here; only its parent's wait remains.
    with contextlib.suppress(FileNotFoundError):
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    return False


@pytest.fixture(scope="module")
def scaled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScaledProfile]:
    workdir = tmp_path_factory.mktemp("scaled")
    with running_profile(workdir, env={"MOTIONMIX_HERO_PREVIEW_S": "0.3"}) as profile:
        yield profile


def test_the_proxy_prints_the_url_and_login_and_spreads_requests_over_both_web_processes(
    scaled: ScaledProfile,
) -> None:
    banner = (scaled.workdir / "supervisor.log").read_text()
    username, password = scaled.login()
    assert f"Open:   http://localhost:{scaled.port}/" in banner
    assert f"Login:  {username} / {password}" in banner
    for url in [*scaled.status()["backends"].values(), scaled.status()["relay"]]:
        assert httpx.get(f"{url}/_ping", timeout=5).status_code == 200
    seen = set()
    with httpx.Client(base_url=scaled.url, timeout=5) as client:
        for _ in range(6):
            response = client.get("/_ping")
            assert response.status_code == 200
            seen.add(response.headers["X-MotionMix-Backend"])
        # A page, not only the probe: DEBUG is off and the static files are collected.
        login_page = client.get("/accounts/login/")
        assert login_page.status_code == 200
        assert login_page.headers["X-MotionMix-Backend"] in {"web-1", "web-2"}
    assert seen == {"web-1", "web-2"}


def _register(scaled: ScaledProfile) -> tuple[str, str]:
    code = scaled.manage("pairing_code", "--raw").strip()
    with httpx.Client(base_url=scaled.url, timeout=10) as client:
        reg = client.post(
            "/api/v1/devices/register", json=register_body(code, install_id="scaled-cam")
        )
        assert reg.status_code in (200, 201), reg.text
        device_id, token = reg.json()["device_id"], reg.json()["token"]
        beat = client.post(
            "/api/v1/devices/heartbeat",
            json=heartbeat_body(),
            headers={"Authorization": f"Bearer {token}"},
        )
        assert beat.status_code == 200, beat.text
    return device_id, token


def _live_session(scaled: ScaledProfile, device_id: str) -> str:
    username, _ = scaled.login()
    script = (
        "from uuid import UUID\n"
        "from django.contrib.auth import get_user_model\n"
        "from director import services\n"
        f"op = get_user_model().objects.get(username={username!r})\n"
        "s = services.session_create(name='Scaled test', operator=op)\n"
        f"services.session_start(session_id=s.pk, device_ids=[UUID({device_id!r})])\n"
        "print(s.pk)\n"
    )
    return scaled.manage("shell", "-c", script).strip().splitlines()[-1]


async def _log_in(client: httpx.AsyncClient, scaled: ScaledProfile) -> str:
    username, password = scaled.login()
    await client.get("/accounts/login/")
    response = await client.post(
        "/accounts/login/",
        data={
            "username": username,
            "password": password,
            "csrfmiddlewaretoken": client.cookies["csrftoken"],
        },
    )
    assert response.status_code == 302, response.text
    return client.cookies["csrftoken"]


async def _hero_journey(scaled: ScaledProfile, device_id: str, token: str, session_id: str) -> None:
    web_1, web_2 = scaled.status()["backends"]["web-1"], scaled.status()["backends"]["web-2"]
    track = CodedTrack(SOURCE, fps=15)
    publisher = await offer_publish(track)
    sink = Sink()
    viewer = await offer_watch(sink)
    socket_url = f"ws://127.0.0.1:{scaled.port}/ws/director/sessions/{session_id}/"
    try:
        async with httpx.AsyncClient(base_url=web_1, timeout=30) as device:
            # WHIP through web-1 (not the proxy's route): web-1 forwards it to the relay.
            whip = await device.post(
                "/api/v1/whip",
                content=publisher.localDescription.sdp,
                headers={"Authorization": f"Bearer {token}", "Content-Type": SDP},
            )
            assert whip.status_code == 201, whip.text
            await answer(publisher, whip.text)
        async with httpx.AsyncClient(base_url=web_2, timeout=30) as operator:
            csrf = await _log_in(operator, scaled)
            # WHEP through web-2: the same relay plays back what came in through web-1.
            whep = await operator.post(
                f"/sessions/{session_id}/whep",
                content=viewer.localDescription.sdp,
                headers={"Content-Type": SDP, "X-CSRFToken": csrf},
            )
            assert whep.status_code == 201, whep.text
            await answer(viewer, whep.text)
            await sink.wait_for(
                lambda s: s.sources().count(SOURCE) >= 5,
                timeout=30,
                what="the published frames played back through the other web process",
            )
            cookie = f"sessionid={operator.cookies['sessionid']}"
            # The operator's socket through the proxy: the relay's card previews reach it
            # over Redis, whichever web process holds the socket.
            async with websockets.connect(
                socket_url,
                additional_headers={"Cookie": cookie, "Origin": f"http://127.0.0.1:{scaled.port}"},
                open_timeout=10,
            ) as socket:
                async with asyncio.timeout(20):
                    while "data:image/jpeg" not in str(await socket.recv()):
                        pass
            # Each end is known to the one relay, whoever is asked: the viewer made through
            # web-2 ends through the proxy, the publish made through web-1 ends through web-2.
            async with httpx.AsyncClient(base_url=scaled.url, timeout=10) as edge:
                end = await edge.delete(
                    whep.headers["Location"],
                    headers={"Cookie": f"{cookie}; csrftoken={csrf}", "X-CSRFToken": csrf},
                )
                assert end.status_code == 200, end.text
                assert end.headers["X-MotionMix-Backend"] == "relay"
            unpublish = await operator.delete(
                whip.headers["Location"], headers={"Authorization": f"Bearer {token}"}
            )
            assert unpublish.status_code == 200, unpublish.text
    finally:
        sink.stop()
        track.stop()
        await publisher.close()
        await viewer.close()


def test_a_whip_publish_through_one_web_process_plays_back_through_the_other(
    scaled: ScaledProfile,
) -> None:
    device_id, token = _register(scaled)
    session_id = _live_session(scaled, device_id)
    # The test's own peers meet the relay on loopback, which aioice leaves out by default.
    ice_host_addresses_apply(["127.0.0.1"])
    try:
        asyncio.run(_hero_journey(scaled, device_id, token, session_id))
    finally:
        ice_host_addresses_apply([])


def test_a_web_process_that_dies_is_skipped_then_restarted(scaled: ScaledProfile) -> None:
    web_2_pid = scaled.status()["children"]["web-2"]
    os.kill(web_2_pid, signal.SIGKILL)
    with httpx.Client(base_url=scaled.url, timeout=5) as client:
        answered = [client.get("/_ping") for _ in range(4)]
    assert [r.status_code for r in answered] == [200] * 4
    assert {r.headers["X-MotionMix-Backend"] for r in answered} == {"web-1"}
    web_2 = scaled.status()["backends"]["web-2"]
    deadline = time.monotonic() + 60
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{web_2}/_ping", timeout=1).status_code == 200:
                break
        assert time.monotonic() < deadline, f"web-2 did not come back:\n{scaled.logs()}"
        time.sleep(0.2)


def test_preflight_passes_against_the_scaled_profile(scaled: ScaledProfile) -> None:
    # Preflight reads the deployment's settings: the environment its processes share.
    env = shared_env(var_dir=scaled.workdir / "var", host="127.0.0.1", base=scaled.env)
    result = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), "preflight", "--url", scaled.url],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\n{scaled.logs()}"


def test_stopping_the_profile_leaves_no_process(scaled: ScaledProfile) -> None:
    # Read now: a child restarted since the start has a new process id.
    children = scaled.status()["children"]
    pids = [scaled.proc.pid, *children.values()]
    # The processes of each child's group (Celery's pool) go too.
    groups = set(children.values())
    code = scaled.stop()
    assert code == 0, scaled.logs()
    deadline = time.monotonic() + 10
    while True:
        alive = [pid for pid in pids if _alive(pid)]
        in_groups = [
            p.name
            for p in Path("/proc").iterdir()
            if p.name.isdigit() and _group_of(int(p.name)) in groups and _alive(int(p.name))
        ]
        if not alive and not in_groups:
            break
        assert time.monotonic() < deadline, f"still running: {alive} {in_groups}"
        time.sleep(0.2)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{scaled.url}/_ping", timeout=2)
    assert "stopped." in (scaled.workdir / "supervisor.log").read_text()


def _group_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None
