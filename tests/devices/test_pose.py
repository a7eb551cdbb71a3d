from __future__ import annotations

import gc
import json
import time
import tracemalloc
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from uuid import UUID

import pytest
from django.db import connection
from django.template.loader import render_to_string
from django.test import Client
from django.utils import timezone

from devices import selectors, services
from devices.models import Device, PoseBatch
from ledger.models import ProductionEvent
from tests.devices.support import assert_error
from tests.support.api import register_device

pytestmark = pytest.mark.django_db

POSE = "pose"
T0 = 1_790_000_000.0  # device clock, unix s
COUNTS = {"coco17": 17, "vision19": 19, "mediapipe33": 33}


def keypoints(count: int = 17, confidence: float = 0.9, shift: float = 0.0) -> list[list[float]]:
    return [[0.1 + 0.01 * i + shift, 0.2 + 0.02 * i, confidence] for i in range(count)]


def frames(n: int, *, start: float = T0, fps: float = 30.0, count: int = 17) -> list[Any]:
    return [{"t": start + i / fps, "keypoints": keypoints(count)} for i in range(n)]


def pose_body(n: int = 3, fmt: str = "coco17", **kwargs: Any) -> dict[str, Any]:
    return {"format": fmt, "frames": frames(n, count=COUNTS[fmt], **kwargs)}


def _device(registered: dict[str, Any]) -> Device:
    return Device.objects.get(pk=registered["device_id"])


def _stored(batch: PoseBatch) -> list[Any]:
    return list(json.loads(batch.frames))


# --- Accepted batches -----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["coco17", "vision19", "mediapipe33"])
def test_a_valid_batch_answers_202_with_the_frame_count_and_is_stored_as_one_row(
    device_api: Any, registered: dict[str, Any], fmt: str
) -> None:
    response = device_api.post(POSE, pose_body(5, fmt), token=registered["token"])

    assert response.status_code == 202, response.content
    assert response.json() == {"accepted": 5}
    batch = PoseBatch.objects.get()
    assert str(batch.device_id) == registered["device_id"]
    assert (batch.format, batch.frame_count, batch.session_id) == (fmt, 5, None)
    assert batch.first_t == T0
    assert batch.last_t == pytest.approx(T0 + 4 / 30)
    assert abs((timezone.now() - batch.received_at).total_seconds()) < 5
    stored = _stored(batch)
    assert len(stored) == 5
    t, values = stored[1]
    assert t == round(T0 + 1 / 30, 6)
    assert values == [round(v, 4) for kp in keypoints(COUNTS[fmt]) for v in kp]


def test_stored_values_are_rounded_to_4_decimals_and_times_to_6(
    device_api: Any, registered: dict[str, Any]
) -> None:
    body = {
        "format": "coco17",
        "frames": [{"t": T0 + 0.123456789, "keypoints": [[0.123456789, 7, 1]] * 17}],
    }

    assert device_api.post(POSE, body, token=registered["token"]).status_code == 202

    [[t, values]] = _stored(PoseBatch.objects.get())
    assert t == round(T0 + 0.123456789, 6)
    assert values[:3] == [0.1235, 7, 1]


def test_frames_sent_out_of_order_are_stored_sorted_by_their_device_time(
    device_api: Any, registered: dict[str, Any]
) -> None:
    in_order = [{"t": T0 + i / 30, "keypoints": keypoints(shift=i / 1000)} for i in range(6)]
    shuffled = [in_order[i] for i in (3, 0, 5, 1, 4, 2)]

    response = device_api.post(
        POSE, {"format": "coco17", "frames": shuffled}, token=registered["token"]
    )

    assert response.status_code == 202, response.content
    batch = PoseBatch.objects.get()
    times = [t for t, _ in _stored(batch)]
    assert times == [round(T0 + i / 30, 6) for i in range(6)]
    # Each frame's keypoints moved with its time.
    assert [values[0] for _, values in _stored(batch)] == [
        round(0.1 + i / 1000, 4) for i in range(6)
    ]
    assert (batch.first_t, batch.last_t) == (times[0], pytest.approx(times[-1]))


def test_a_batch_that_arrives_late_is_kept_beside_the_newer_one(
    device_api: Any, registered: dict[str, Any]
) -> None:
    newer = device_api.post(POSE, pose_body(30, start=T0 + 10), token=registered["token"])
    late = device_api.post(POSE, pose_body(30, start=T0), token=registered["token"])

    assert (newer.status_code, late.status_code) == (202, 202)
    assert sorted(PoseBatch.objects.values_list("first_t", flat=True)) == [T0, T0 + 10]


def test_a_batch_records_the_devices_live_session(
    device_api: Any, registered: dict[str, Any], operator: Any
) -> None:
    from director.models import PhotoshootSession

    live = PhotoshootSession.objects.create(name="Live", operator=operator, status="live")
    live.devices.add(_device(registered))
    done = PhotoshootSession.objects.create(name="Old", operator=operator, status="ended")
    done.devices.add(_device(registered))

    assert device_api.post(POSE, pose_body(), token=registered["token"]).status_code == 202

    assert PoseBatch.objects.get().session_id == live.pk


def test_a_batch_writes_no_ledger_event(device_api: Any, registered: dict[str, Any]) -> None:
    before = ProductionEvent.objects.count()

    for second in range(3):
        body = pose_body(30, start=T0 + second)
        assert device_api.post(POSE, body, token=registered["token"]).status_code == 202

    assert ProductionEvent.objects.count() == before


# --- Refused batches ------------------------------------------------------------------------


def _bad_frame(mutate: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    body = pose_body(5)
    mutate(body["frames"][2])
    return body


def _set_value(j: int, k: int, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(frame: dict[str, Any]) -> None:
        frame["keypoints"][j][k] = value

    return mutate


MALFORMED = {
    "one keypoint short": (
        lambda f: f["keypoints"].pop(),
        "frames[2].keypoints: coco17 needs 17 keypoints, got 16",
    ),
    "one keypoint too many": (
        lambda f: f["keypoints"].append([0.1, 0.1, 0.1]),
        "frames[2].keypoints: coco17 needs 17 keypoints, got 18",
    ),
    "confidence above 1": (
        _set_value(4, 2, 1.5),
        "frames[2].keypoints[4]: confidence must be between 0 and 1, got 1.5",
    ),
    "confidence below 0": (
        _set_value(4, 2, -0.1),
        "frames[2].keypoints[4]: confidence must be between 0 and 1, got -0.1",
    ),
    "x as a string": (
        _set_value(0, 0, "0.5"),
        'frames[2].keypoints[0]: x must be a number, got "0.5"',
    ),
    "y as null": (_set_value(16, 1, None), "frames[2].keypoints[16]: y must be a number, got null"),
    "confidence as a boolean": (
        _set_value(3, 2, True),
        "frames[2].keypoints[3]: confidence must be a number, got true",
    ),
    "a pair, not a triple": (
        lambda f: f["keypoints"].__setitem__(5, [0.1, 0.2]),
        "frames[2].keypoints[5]: send [x, y, confidence], got [0.1, 0.2]",
    ),
    "t missing": (lambda f: f.pop("t"), "frames[2].t: missing"),
    "t as a string": (lambda f: f.__setitem__("t", "now"), "frames[2].t: must be a finite number"),
    "t in milliseconds": (
        lambda f: f.__setitem__("t", T0 * 1000),
        "frames[2].t: must be a finite number",
    ),
    "keypoints missing": (lambda f: f.pop("keypoints"), "frames[2].keypoints: send a list"),
    "a frame that is a list": (
        lambda f: (f.clear(), f.update({"t": [T0]})),
        "frames[2].t: must be a finite number",
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED), ids=list(MALFORMED))
def test_a_malformed_frame_is_refused_with_400_naming_the_frame(
    device_api: Any, registered: dict[str, Any], case: str
) -> None:
    mutate, expected = MALFORMED[case]

    response = device_api.post(POSE, _bad_frame(mutate), token=registered["token"])

    assert expected in assert_error(response, 400, "invalid")
    assert not PoseBatch.objects.exists()


@pytest.mark.parametrize(
    ("literal", "shown"), [("NaN", "NaN"), ("Infinity", "Infinity"), ("-Infinity", "-Infinity")]
)
def test_nan_and_infinity_are_refused_naming_the_frame(
    registered: dict[str, Any], literal: str, shown: str
) -> None:
    # Python's JSON parser (and so StrictJsonParser) accepts these literals: the check must not.
    pose = pose_body(5)
    pose["frames"][3]["keypoints"][0][2] = "BAD"
    body = json.dumps(pose).replace('"BAD"', literal)

    response = Client().post(
        "/api/v1/pose",
        body,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {registered['token']}",
    )

    detail = assert_error(response, 400, "invalid")
    assert detail == f"frames[3].keypoints[0]: confidence must be finite, got {shown}."


def test_a_nan_time_is_refused_naming_the_frame(registered: dict[str, Any]) -> None:
    pose = pose_body(3)
    pose["frames"][1]["t"] = "BAD"
    body = json.dumps(pose).replace('"BAD"', "NaN")

    response = Client().post(
        "/api/v1/pose",
        body,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {registered['token']}",
    )

    assert "frames[1].t: must be a finite number" in assert_error(response, 400, "invalid")


def test_an_unknown_format_is_refused_naming_the_formats(
    device_api: Any, registered: dict[str, Any]
) -> None:
    body = pose_body() | {"format": "openpose25"}

    detail = assert_error(device_api.post(POSE, body, token=registered["token"]), 400, "invalid")

    assert detail.startswith("format:")
    assert "coco17" in detail and "mediapipe33" in detail


def test_the_service_names_the_first_bad_frame_of_a_batch_from_python_too(
    registered: dict[str, Any],
) -> None:
    batch: list[Any] = frames(4)
    batch[1] = {"t": T0, "keypoints": [tuple(kp) for kp in keypoints()]}
    batch[3] = "frame"

    with pytest.raises(services.PoseRejected) as refused:
        services.pose_batch_ingest(
            device_id=UUID(registered["device_id"]), format="coco17", frames=batch
        )

    assert str(refused.value) == (
        "frames[1].keypoints[0]: send [x, y, confidence], got (0.1, 0.2, 0.9)."
    )
    assert not PoseBatch.objects.exists()


def test_a_batch_of_no_frames_is_refused(device_api: Any, registered: dict[str, Any]) -> None:
    body = {"format": "coco17", "frames": []}

    detail = assert_error(device_api.post(POSE, body, token=registered["token"]), 400, "invalid")

    assert detail == "frames: send at least 1 frame."


def test_frames_that_are_not_a_list_are_refused(
    device_api: Any, registered: dict[str, Any]
) -> None:
    body = {"format": "coco17", "frames": {"t": T0}}

    detail = assert_error(device_api.post(POSE, body, token=registered["token"]), 400, "invalid")

    assert detail.startswith("frames: send a list of frames")


def test_more_frames_than_the_default_limit_of_300_answers_413(
    device_api: Any, registered: dict[str, Any]
) -> None:
    at_limit = device_api.post(POSE, pose_body(300), token=registered["token"])
    over = device_api.post(POSE, pose_body(301, start=T0 + 20), token=registered["token"])

    assert at_limit.status_code == 202, at_limit.content
    detail = assert_error(over, 413, "too_large")
    assert detail == "frames: 301 frames in one batch; the limit is 300. Send smaller batches."
    assert PoseBatch.objects.count() == 1


def test_the_frame_limit_follows_the_setting(
    device_api: Any, registered: dict[str, Any], settings: Any
) -> None:
    settings.MOTIONMIX_POSE_MAX_FRAMES = 10

    response = device_api.post(POSE, pose_body(11), token=registered["token"])

    assert "the limit is 10" in assert_error(response, 413, "too_large")


def test_a_full_batch_of_33_keypoints_at_full_precision_fits_the_body_limit(
    device_api: Any, registered: dict[str, Any]
) -> None:
    precise = [[0.12345678901234567, 0.7654321098765432, 0.9876543210987654]] * 33
    body = {
        "format": "mediapipe33",
        "frames": [{"t": T0 + i / 30, "keypoints": precise} for i in range(300)],
    }
    assert len(json.dumps(body)) > 64 * 1024

    response = device_api.post(POSE, body, token=registered["token"])

    assert response.status_code == 202, response.content


def test_a_body_over_the_pose_limit_answers_413(
    device_api: Any, registered: dict[str, Any]
) -> None:
    body = pose_body(3) | {"padding": "x" * (1024 * 1024)}

    assert_error(device_api.post(POSE, body, token=registered["token"]), 413, "too_large")


def test_a_body_that_is_not_json_is_refused_as_bad_json(registered: dict[str, Any]) -> None:
    response = Client().post(
        "/api/v1/pose",
        b'{"format": "coco17", "frames": [',
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {registered['token']}",
    )

    assert_error(response, 400, "bad_json")


@pytest.mark.parametrize("token", [None, "mm_wrong"])
def test_pose_without_a_valid_token_answers_401(
    device_api: Any, registered: dict[str, Any], token: str | None
) -> None:
    response = device_api.post(POSE, pose_body(), token=token)

    assert_error(response, 401, "unauthorized")
    assert not PoseBatch.objects.exists()


def test_pose_sent_as_something_other_than_json_answers_415(
    registered: dict[str, Any],
) -> None:
    response = Client().post(
        "/api/v1/pose",
        json.dumps(pose_body()),
        content_type="text/plain",
        HTTP_AUTHORIZATION=f"Bearer {registered['token']}",
    )

    assert_error(response, 415, "unsupported_media_type")


def test_the_openapi_document_describes_pose_with_the_token_and_its_answers() -> None:
    document = Client().get("/api/v1/openapi.json").json()

    pose = document["paths"]["/api/v1/pose"]["post"]
    assert pose["security"] == [{"DeviceToken": []}]
    assert set(pose["responses"]) >= {"202", "400", "401", "413", "415"}
    ref = pose["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = document["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    assert schema["properties"]["format"]["enum"] == ["coco17", "vision19", "mediapipe33"]
    assert schema["properties"]["frames"]["type"] == "array"


# --- The pose rate on the card --------------------------------------------------------------


def _card(device: Device) -> str:
    html = render_to_string("director/partials/device_card.html", {"device": device})
    start = html.index('data-testid="pose">') + len('data-testid="pose">')
    return html[start : html.index("</dd>", start)]


def _age_pose_rate(device_id: Any, seconds: float) -> None:
    Device.objects.filter(pk=device_id).update(pose_at=timezone.now() - timedelta(seconds=seconds))


def test_a_batch_sets_the_pose_rate_on_the_device_and_its_card(
    device_api: Any, registered: dict[str, Any], django_capture_on_commit_callbacks: Any
) -> None:
    assert _card(_device(registered)) == "—"

    with django_capture_on_commit_callbacks() as callbacks:
        response = device_api.post(POSE, pose_body(30), token=registered["token"])

    assert response.status_code == 202
    device = _device(registered)
    assert device.pose_fps == 30.0
    assert device.pose_live
    assert _card(device) == "30 fps"
    assert len(callbacks) == 1  # the card is pushed once, after the commit


def test_the_card_shows_no_pose_rate_once_pose_stops_for_a_while(
    device_api: Any, registered: dict[str, Any]
) -> None:
    from devices.models import POSE_LIVE_S

    device_api.post(POSE, pose_body(30), token=registered["token"])
    _age_pose_rate(registered["device_id"], POSE_LIVE_S + 1)

    device = _device(registered)
    assert not device.pose_live
    assert _card(device) == "—"


def test_the_pose_rate_is_written_at_most_once_a_second(
    registered: dict[str, Any], django_capture_on_commit_callbacks: Any
) -> None:
    device_id = UUID(registered["device_id"])

    with django_capture_on_commit_callbacks() as callbacks:
        services.pose_batch_ingest(device_id=device_id, format="coco17", frames=frames(30))
        services.pose_batch_ingest(
            device_id=device_id, format="coco17", frames=frames(15, start=T0 + 1, fps=15)
        )

    assert Device.objects.get(pk=device_id).pose_fps == 30.0
    assert len(callbacks) == 1

    _age_pose_rate(device_id, 1.5)
    with django_capture_on_commit_callbacks() as callbacks:
        services.pose_batch_ingest(
            device_id=device_id, format="coco17", frames=frames(15, start=T0 + 2, fps=15)
        )

    assert Device.objects.get(pk=device_id).pose_fps == 15.0
    assert len(callbacks) == 1


def test_a_steady_pose_rate_is_rewritten_only_when_older_than_5_seconds(
    registered: dict[str, Any], django_capture_on_commit_callbacks: Any
) -> None:
    device_id = UUID(registered["device_id"])
    services.pose_batch_ingest(device_id=device_id, format="coco17", frames=frames(30))

    _age_pose_rate(device_id, 3)
    with django_capture_on_commit_callbacks() as callbacks:
        services.pose_batch_ingest(
            device_id=device_id, format="coco17", frames=frames(30, start=T0 + 1, fps=30.4)
        )
    assert callbacks == []
    assert Device.objects.get(pk=device_id).pose_at < timezone.now() - timedelta(seconds=2)

    _age_pose_rate(device_id, 5.5)
    with django_capture_on_commit_callbacks() as callbacks:
        services.pose_batch_ingest(
            device_id=device_id, format="coco17", frames=frames(30, start=T0 + 2)
        )
    assert len(callbacks) == 1
    assert Device.objects.get(pk=device_id).pose_live


def test_a_single_frame_batch_is_stored_but_says_nothing_about_the_rate(
    registered: dict[str, Any],
) -> None:
    device_id = UUID(registered["device_id"])

    accepted = services.pose_batch_ingest(device_id=device_id, format="coco17", frames=frames(1))

    assert accepted == 1
    assert PoseBatch.objects.get().frame_count == 1
    assert Device.objects.get(pk=device_id).pose_fps is None


# --- An hour of pose from four cameras ------------------------------------------------------


def test_an_hour_of_30_fps_from_4_devices_is_1440_rows_in_constant_memory() -> None:
    """432,000 frames in 300-frame batches, straight through the service (the HTTP layer is
    covered above; through the test client the hour would take minutes).

    Memory: tracemalloc traces the first 200 batches and the last 200 (tracing all 1,440 would
    multiply the run time by four). The peak while storing the last 200 stays within a small
    constant of the peak while storing the first 200, what the last 200 leave allocated is
    about nothing, and the untraced batches between them leave no Python objects behind."""
    device_ids = [register_device(f"volume-{i}").device.pk for i in range(4)]
    seconds_per_batch = 10
    kp = keypoints(17, confidence=0.87654321, shift=0.000123456)
    batch = [{"t": T0, "keypoints": kp} for _ in range(300)]
    batches = [
        (device_id, T0 + start)
        for start in range(0, 3600, seconds_per_batch)
        for device_id in device_ids
    ]
    assert len(batches) == 1440

    def send(window: list[tuple[UUID, float]]) -> None:
        for device_id, start in window:
            for i, frame in enumerate(batch):
                frame["t"] = start + i / 30
            services.pose_batch_ingest(device_id=device_id, format="coco17", frames=batch)

    def traced(window: list[tuple[UUID, float]]) -> tuple[int, int]:
        tracemalloc.start()
        try:
            send(window)
            peak = tracemalloc.get_traced_memory()[1]
            gc.collect()  # Django's queries leave cycles behind: garbage, not growth
            return tracemalloc.get_traced_memory()[0], peak
        finally:
            tracemalloc.stop()

    began = time.perf_counter()
    held_first, peak_first = traced(batches[:200])
    gc.collect()
    objects_before = len(gc.get_objects())
    send(batches[200:-200])
    gc.collect()
    objects_after = len(gc.get_objects())
    held_last, peak_last = traced(batches[-200:])
    elapsed = time.perf_counter() - began

    rows = PoseBatch.objects.count()
    frames_stored = sum(PoseBatch.objects.values_list("frame_count", flat=True))
    print(
        f"\nvolume ({connection.vendor}): {elapsed:.1f} s, {rows} rows, {frames_stored} frames; "
        f"first 200: peak {peak_first / 1024:.0f} KiB, held {held_first / 1024:.0f} KiB; "
        f"last 200: peak {peak_last / 1024:.0f} KiB, held {held_last / 1024:.0f} KiB; "
        f"objects {objects_before} -> {objects_after} over the 1,040 between"
    )
    assert rows == 1440
    assert frames_stored == 432_000
    assert peak_last <= peak_first + 256 * 1024
    # Bounded caches (sqlite3 keeps 128 statements, and each savepoint has its own name) fill
    # up; a batch's frames (about 60 KiB of text each) are never kept.
    assert held_last <= 256 * 1024
    assert objects_after - objects_before < 1000


# --- pose_latest ----------------------------------------------------------------------------


def test_pose_latest_returns_each_devices_recent_frames_sorted_by_device_time() -> None:
    cam1, cam2, idle = (register_device(f"latest-{i}").device.pk for i in range(3))
    services.pose_batch_ingest(device_id=cam1, format="coco17", frames=frames(3, start=T0))
    PoseBatch.objects.update(received_at=timezone.now() - timedelta(seconds=30))
    services.pose_batch_ingest(device_id=cam1, format="coco17", frames=frames(2, start=T0 + 20))
    services.pose_batch_ingest(device_id=cam1, format="coco17", frames=frames(2, start=T0 + 10))
    services.pose_batch_ingest(
        device_id=cam2, format="vision19", frames=frames(1, start=T0 + 5, count=19)
    )

    latest = selectors.pose_latest(device_ids=[cam1, cam2, idle], since_s=3)

    assert set(latest) == {cam1, cam2, idle}
    assert [frame.t for frame in latest[cam1]] == [
        T0 + 10,
        round(T0 + 10 + 1 / 30, 6),
        T0 + 20,
        round(T0 + 20 + 1 / 30, 6),
    ]
    t, format, points = latest[cam2][0]
    assert t == T0 + 5
    assert format == "vision19"
    assert len(points) == 19
    assert points[1] == (0.11, 0.22, 0.9)
    assert latest[idle] == []


def test_pose_latest_leaves_out_devices_not_asked_for() -> None:
    cam1, cam2 = (register_device(f"only-{i}").device.pk for i in range(2))
    for cam in (cam1, cam2):
        services.pose_batch_ingest(device_id=cam, format="coco17", frames=frames(2))

    assert set(selectors.pose_latest(device_ids=[cam2], since_s=10)) == {cam2}


def test_pose_latest_keeps_only_each_devices_newest_frames_when_limited() -> None:
    cam = register_device("limited").device.pk
    services.pose_batch_ingest(device_id=cam, format="coco17", frames=frames(5, start=T0))

    latest = selectors.pose_latest(device_ids=[cam], since_s=10, limit=2)

    assert [frame.t for frame in latest[cam]] == [
        round(T0 + 3 / 30, 6),
        round(T0 + 4 / 30, 6),
    ]
