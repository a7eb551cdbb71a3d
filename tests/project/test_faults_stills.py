"""Faults on the still upload path, against a real server: a device that drops the connection
halfway through an upload, and a server whose disk is full. Neither may leave a partial still
(no row, no file, no temporary file), and the device's copy is kept until the server has it."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import os
import random
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.test import Client, override_settings
from PIL import Image

from devices.simulator import Simulator
from tests.support.api import heartbeat_body, register_body
from tests.support.requirements import missing
from tests.support.server import RunningServer, running_server
from tests.support.waiting import until

# The server's media folder is a tmpfs this small, so a test can fill it.
MEDIA_SIZE = 4 * 1024 * 1024
WITHIN_S = 30.0


@dataclass
class StillsServer:
    server: RunningServer
    media: Path
    tmp: Path  # the server's TMPDIR: its temporary upload files go here
    tmpfs: bool  # media is a tmpfs of MEDIA_SIZE (needs root)


def _mount_tmpfs(path: Path) -> bool:
    if os.geteuid() != 0:
        return False
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={MEDIA_SIZE}", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


@pytest.fixture(scope="module")
def stills_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StillsServer]:
    workdir = tmp_path_factory.mktemp("faults-stills")
    media, tmp = workdir / "media", workdir / "tmp"
    media.mkdir()
    tmp.mkdir()
    tmpfs = _mount_tmpfs(media)
    try:
        extra_env = {"MOTIONMIX_MEDIA_ROOT": str(media), "TMPDIR": str(tmp)}
        with running_server(workdir, extra_env=extra_env, celery=False) as server:
            yield StillsServer(server=server, media=media, tmp=tmp, tmpfs=tmpfs)
    finally:
        if tmpfs:
            subprocess.run(["umount", "-l", str(media)], check=False)


def _jpeg(seed: int, size: tuple[int, int] = (640, 480)) -> bytes:
    # Noise does not compress: a few hundred KB, more than Twisted keeps in memory (100 KB).
    rng = random.Random(seed)
    pixels = bytes(rng.getrandbits(8) for _ in range(size[0] * size[1] * 3))
    out = io.BytesIO()
    Image.frombytes("RGB", size, pixels).save(out, "JPEG", quality=90)
    return out.getvalue()


def _register(server: RunningServer, install_id: str) -> str:
    code = server.pairing_code()
    answer = httpx.post(
        f"{server.url}/api/v1/devices/register", json=register_body(code, install_id), timeout=10
    )
    assert answer.status_code == 201, answer.text
    token = str(answer.json()["token"])
    beat = httpx.post(
        f"{server.url}/api/v1/devices/heartbeat",
        json=heartbeat_body(),
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert beat.status_code == 200, beat.text
    return token


def _multipart(data: bytes, *, boundary: str = "mmfaultboundary") -> tuple[bytes, str]:
    meta = {
        "captured_at": time.time(),
        "lens": "wide",
        "zoom": 1.0,
        "flip": {"horizontal": False, "vertical": False},
        "orientation": "landscape_left",
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    body = (
        (
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="meta"\r\n\r\n'
            f"{json.dumps(meta)}\r\n"
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="file"; filename="IMG_0001.JPG"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def _stills_of(server: RunningServer, sha256s: list[str]) -> list[dict[str, Any]]:
    code = f"""
import json
from director.models import Still
rows = Still.objects.filter(sha256__in={sha256s!r})
print(json.dumps([{{"sha256": s.sha256, "file": s.file.name, "thumb": s.thumbnail.name}}
                  for s in rows]))
"""
    done = server.manage("shell", "-c", code)
    return list(json.loads(done.stdout.strip().splitlines()[-1]))


async def _command_ack(server: RunningServer, command_id: str) -> str:
    """The command's state and detail, once the phone has answered it."""
    code = (
        "from devices.models import DeviceCommand\n"
        f"c = DeviceCommand.objects.get(pk={command_id!r})\n"
        "print(f'{c.state}|{c.detail}' if c.finished_at else 'open')"
    )
    deadline = time.monotonic() + WITHIN_S
    while True:
        done = await asyncio.to_thread(server.manage, "shell", "-c", code)
        state = done.stdout.strip().splitlines()[-1]
        if state != "open" or time.monotonic() > deadline:
            return state
        await asyncio.sleep(0.5)


def _files(folder: Path) -> set[str]:
    return {
        str(Path(root, name).relative_to(folder))
        for root, _dirs, names in os.walk(folder)
        for name in names
    }


def test_a_device_dropping_mid_upload_leaves_no_partial_still_and_a_full_upload_then_succeeds(
    stills_server: StillsServer,
) -> None:
    server = stills_server.server
    token = _register(server, "drop-1")
    data = _jpeg(1)
    body, content_type = _multipart(data)
    media_before = _files(stills_server.media)
    head = (
        "POST /api/v1/stills HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{server.port}\r\n"
        f"Authorization: Bearer {token}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()

    # The meta and half the file go out, then the phone leaves the network.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
        raw.sendall(head + body[: len(body) // 2])
        raw.shutdown(socket.SHUT_RDWR)

    # The same still again, whole, from the same phone: stored once, as new.
    answer = httpx.post(
        f"{server.url}/api/v1/stills",
        content=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": content_type},
        timeout=30,
    )
    assert answer.status_code == 201, answer.text
    sha = hashlib.sha256(data).hexdigest()
    rows = _stills_of(server, [sha])
    assert len(rows) == 1
    # Only the complete still and its thumbnail were written; nothing is left over anywhere.
    assert _files(stills_server.media) - media_before == {rows[0]["file"], rows[0]["thumb"]}
    assert (stills_server.media / rows[0]["file"]).read_bytes() == data
    assert _files(stills_server.tmp) == set()


async def test_a_full_disk_answers_507_keeps_the_phones_copy_and_it_uploads_once_there_is_room(
    stills_server: StillsServer,
) -> None:
    if not stills_server.tmpfs:
        missing("mounting a small tmpfs as the media folder needs root (mount -t tmpfs)")
    server = stills_server.server
    media = stills_server.media
    code = await asyncio.to_thread(server.pairing_code)

    async def code_source() -> str:
        return code

    fleet = Simulator(
        url=server.url, count=1, code_source=code_source, install_prefix="full", pose_fps=0
    )
    phone = fleet.phones[0]
    running = asyncio.create_task(fleet.run())
    filler = media / "filler.bin"
    try:
        await until(lambda: phone.beats > 0 or running.done(), within=WITHIN_S, what="a beat")
        assert not running.done()
        media_before = _files(media)
        # Fill the disk to within 64 KB: no still of this phone fits.
        free = os.statvfs(media).f_bavail * os.statvfs(media).f_frsize
        filler.write_bytes(b"\0" * max(0, free - 64 * 1024))

        issued = await asyncio.to_thread(
            server.manage,
            "shell",
            "-c",
            "from devices.services import command_issue\n"
            f"c = command_issue(device_id={phone.device_id!r}, type='capture_still', ttl_s=60)\n"
            "print(c.pk)",
        )
        command_id = issued.stdout.strip().splitlines()[-1]
        await until(lambda: len(phone.outbox) == 1, within=WITHIN_S, what="the still is kept")
        kept = phone.outbox[0]
        assert kept.command_id == command_id
        sha = str(kept.meta["sha256"])

        # The answer the phone had: 507 with the contract's body and a message to act on.
        body, content_type = _multipart(kept.jpeg)
        answer = await asyncio.to_thread(
            httpx.post,
            f"{server.url}/api/v1/stills",
            content=body,
            headers={"Authorization": f"Bearer {phone.token}", "Content-Type": content_type},
            timeout=30,
        )
        assert answer.status_code == 507, answer.text
        error = answer.json()
        assert set(error) == {"error", "detail"}
        assert error["error"] == "insufficient_storage"
        assert "no room left" in error["detail"] and "upload it again later" in error["detail"]
        # Never acked: no row, nothing partial in the media folder, no temporary file.
        assert await asyncio.to_thread(_stills_of, server, [sha]) == []
        assert _files(media) == media_before | {"filler.bin"}
        assert _files(stills_server.tmp) == set()
        assert phone.stills_uploaded == 0
        # The capture is answered failed, saying the still is kept and will follow.
        ack = await _command_ack(server, command_id)
        assert ack.startswith("failed|") and "kept on the phone" in ack, ack

        # The operator frees space: the phone's outbox uploads the very same still.
        filler.unlink()
        await until(
            lambda: not phone.outbox and phone.stills_uploaded == 1,
            within=WITHIN_S,
            what="the kept still uploaded",
        )
        rows = await asyncio.to_thread(_stills_of, server, [sha])
        assert len(rows) == 1
        assert (media / rows[0]["file"]).read_bytes() == kept.jpeg
    finally:
        fleet.stop()
        await asyncio.wait_for(running, timeout=15)
        with contextlib.suppress(FileNotFoundError):
            filler.unlink()


@pytest.mark.django_db
def test_a_full_temporary_folder_answers_507_and_keeps_no_partial_file(
    tmp_path: Path, device_api: Any
) -> None:
    """The other write of an upload: the file streaming into the temporary folder. (Through
    Django's test client: behind Daphne, Twisted spools the body into the same folder first.)"""
    if not _mount_tmpfs(tmp_path):
        missing("mounting a small tmpfs as the temporary folder needs root (mount -t tmpfs)")
    try:
        registration = device_api.register("tmp-full")
        token = registration["token"]
        assert device_api.heartbeat(token).status_code == 200
        free = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize
        (tmp_path / "filler.bin").write_bytes(b"\0" * max(0, free - 32 * 1024))
        data = _jpeg(2)
        body, content_type = _multipart(data)

        with override_settings(FILE_UPLOAD_TEMP_DIR=str(tmp_path)):
            answer = Client().generic(
                "POST",
                "/api/v1/stills",
                body,
                content_type=content_type,
                HTTP_AUTHORIZATION=f"Bearer {token}",
            )

        assert answer.status_code == 507, answer.content
        assert answer.json()["error"] == "insufficient_storage"
        assert "temporary folder" in answer.json()["detail"]
        assert _files(tmp_path) == {"filler.bin"}
        from director.models import Still

        assert not Still.objects.exists()
    finally:
        subprocess.run(["umount", "-l", str(tmp_path)], check=False)
