"""The cross-correlation check: a dancer whose speed follows "Chaos God"'s onsets, paired with
a sidecar offset that is 0.2 s wrong. `report` measures the error and changes nothing; `apply`
corrects it and says so in the manifest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.shared_data import SHARED_DATA
from training.audio import decode_audio
from training.audio_features import audio_features
from training.build import build
from training.config import config_from_dict
from training.progress import Progress

SONG = SHARED_DATA / "music" / "muldjord-chaos-god" / "song.ogg"
TRUE_START = 300  # the dancer's first frame is audio frame 300 (10 s)…
WRONG_BY = 6  # …but the sidecar says 10.2 s
FRAMES = 1800  # 60 s at 30 fps


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if not SONG.exists():
        pytest.skip(f"the shared recordings are not at {SHARED_DATA} (../shared/data)")
    root = tmp_path_factory.mktemp("refine")
    cache = root / "cache"
    onset = audio_features(decode_audio(SONG, cache), cache).onset_env
    envelope = np.asarray(onset[TRUE_START : TRUE_START + FRAMES], dtype=np.float64)
    # Every joint moves sideways by the onset strength: the speed is the envelope.
    travel = np.cumsum(envelope) * 0.002
    base = np.array([[0.5, 0.2 + 0.04 * j, 0.9] for j in range(17)])
    with (root / "dancer.ndjson").open("w") as file:
        for k in range(FRAMES):
            points = base.copy()
            points[:, 0] += travel[k]
            file.write(json.dumps({"t": k / 30, "keypoints": points.round(6).tolist()}) + "\n")
    sidecar = {
        "source": "onset-dancer",
        "audio": str(SONG),
        "motion": [{"file": "dancer.ndjson", "offset_s": (TRUE_START + WRONG_BY) / 30}],
    }
    (root / "pairing.json").write_text(json.dumps(sidecar))
    return root, cache


def build_with(folder: tuple[Path, Path], out: str, refine: str) -> dict[str, Any]:
    root, cache = folder
    config = config_from_dict({"refine": refine})
    manifest = build(
        [str(root)], root / out, config, cache_dir=cache, progress=Progress(quiet=True)
    )
    [pair] = manifest["pairs"]
    return pair


def test_report_measures_the_error_and_changes_nothing(folder: tuple[Path, Path]) -> None:
    pair = build_with(folder, "report", "report")
    assert pair["refine"]["lag_frames"] == WRONG_BY  # the motion comes 6 frames late
    assert pair["refine"]["confidence"] >= 0.5
    assert pair["refine"]["applied"] is False
    assert pair["first_frame"] == TRUE_START + WRONG_BY
    assert pair["shift_s"] == pytest.approx((TRUE_START + WRONG_BY) / 30)


def test_apply_corrects_the_offset_and_records_it(folder: tuple[Path, Path]) -> None:
    pair = build_with(folder, "apply", "apply")
    assert pair["refine"]["applied"] is True
    # Corrected to within half a frame (the lag is refined between frames), so the first
    # frame with pose is 300, or 301 if the correction leaves it a hair late.
    assert pair["shift_s"] == pytest.approx(TRUE_START / 30, abs=1 / 60)
    assert pair["first_frame"] in (TRUE_START, TRUE_START + 1)
    assert pair["alignment"]["offset_s"] == pytest.approx((TRUE_START + WRONG_BY) / 30)


def test_off_measures_nothing(folder: tuple[Path, Path]) -> None:
    assert "refine" not in build_with(folder, "off", "off")
