"""The build's settings: every number that shapes the dataset, in one frozen record.

The config is written into the output (`config.json`) and hashed into the dataset id, so a
dataset says exactly how it was made. A `--config FILE` (JSON) overrides any of the defaults;
an unknown key or a value of the wrong kind is refused rather than ignored.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.jsonfile import read_json_object
from training.timeline import FPS, HOP_LENGTH, SAMPLE_RATE, InputError

REFINE_MODES = ("off", "report", "apply")


@dataclass(frozen=True)
class BuildConfig:
    # Windows: `window_s` long, a new one every `stride_s`; a window with more than
    # `max_missing_fraction` of its frames missing is dropped (and counted).
    window_s: float = 5.0
    stride_s: float = 2.5
    max_missing_fraction: float = 0.2
    # Motion frames with no pose are never interpolated across more than this.
    max_gap_s: float = 0.2
    # Train/validation split, by source (a session or a folder), never inside one.
    val_fraction: float = 0.2
    split_seed: int = 0
    # Shards hold at most this many windows each.
    shard_windows: int = 256
    # Cross-correlation of onset envelope and motion speed: "off", "report" (measure and
    # report, change nothing) or "apply" (shift a pair whose confidence reaches
    # `refine_min_confidence`; the shift is recorded in the manifest).
    refine: str = "report"
    refine_max_lag_s: float = 1.0
    refine_min_confidence: float = 0.5
    # Beat Align Score: the Gaussian's σ in seconds (training.metrics says why 0.1 s).
    bas_sigma_s: float = 0.1
    # Promotion: the report's go/no-go thresholds.
    promote_min_windows: int = 1
    promote_max_missing_rate: float = 0.25
    promote_min_bas: float = 0.0

    def __post_init__(self) -> None:
        problems = []
        if self.window_frames < 2:
            problems.append("window_s must cover at least 2 frames at 30 fps")
        if self.stride_frames < 1:
            problems.append("stride_s must be at least one frame (1/30 s)")
        if not 0.0 <= self.max_missing_fraction <= 1.0:
            problems.append("max_missing_fraction must be within 0..1")
        if self.max_gap_s < 0:
            problems.append("max_gap_s must not be negative")
        if not 0.0 <= self.val_fraction < 1.0:
            problems.append("val_fraction must be within 0..1 (1 excluded)")
        if self.shard_windows < 1:
            problems.append("shard_windows must be at least 1")
        if self.refine not in REFINE_MODES:
            problems.append(f"refine must be one of {', '.join(REFINE_MODES)}")
        if self.refine_max_lag_s <= 0 or self.bas_sigma_s <= 0:
            problems.append("refine_max_lag_s and bas_sigma_s must be positive")
        if problems:
            raise InputError("config: " + "; ".join(problems))

    @property
    def window_frames(self) -> int:
        return round(self.window_s * FPS)

    @property
    def stride_frames(self) -> int:
        return round(self.stride_s * FPS)

    @property
    def max_lag_frames(self) -> int:
        return max(1, round(self.refine_max_lag_s * FPS))

    def as_dict(self) -> dict[str, Any]:
        """The settings plus the fixed facts of the format, as written to config.json."""
        fields = dataclasses.asdict(self)
        fields["fps"] = FPS
        fields["sample_rate"] = SAMPLE_RATE
        fields["hop_length"] = HOP_LENGTH
        fields["window_frames"] = self.window_frames
        fields["stride_frames"] = self.stride_frames
        return fields


FIXED = ("fps", "sample_rate", "hop_length", "window_frames", "stride_frames")


def load_config(path: Path | None) -> BuildConfig:
    """The defaults, overridden by the JSON object in `path` (if given)."""
    if path is None:
        return BuildConfig()
    return config_from_dict(read_json_object(path, "the config"), origin=str(path))


def config_from_dict(raw: dict[str, Any], *, origin: str = "config") -> BuildConfig:
    defaults = BuildConfig()
    known = {field.name: field for field in dataclasses.fields(BuildConfig)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key in FIXED:
            if value != defaults.as_dict()[key]:
                raise InputError(f"{origin}: {key} is fixed at {defaults.as_dict()[key]}")
            continue
        if key not in known:
            raise InputError(f"{origin}: unknown setting {key!r}")
        expected = type(getattr(defaults, key))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not expected:
            raise InputError(f"{origin}: {key} must be a {expected.__name__}, not {value!r}")
        values[key] = value
    return BuildConfig(**values)
