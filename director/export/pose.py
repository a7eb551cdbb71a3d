"""One device's pose frames, in device-time order, mapped to the server's clock.

Batches are stored one row each and may arrive late, out of order or twice (a phone that
retries after a lost answer). Reading every frame of an hour into memory to sort it is not
needed: batches are read in order of their first frame's time, and a frame is written once no
batch still to come can hold an earlier one (every later batch starts at or after the current
batch's first frame). Only the overlap between batches is held.

Two frames with the same device time are one frame sent twice: the one that arrived first is
kept and the rest are counted as duplicates.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO

from director.export.clockmap import ClockMap


@dataclass(frozen=True)
class BatchRow:
    received_rank: tuple[float, int]  # (received_at as unix s, row id): earliest kept
    format: str
    first_t: float
    frames_json: str
    session_match: bool  # recorded for this session (else: kept only inside its span)


@dataclass
class PoseStats:
    frames: int = 0
    duplicates: int = 0
    outside_span: int = 0
    batches: int = 0
    late_batches: int = 0  # arrived after a batch holding later frames
    formats: set[str] = field(default_factory=set)
    first_t_device: float | None = None
    last_t_device: float | None = None
    first_t_server: float | None = None
    last_t_server: float | None = None

    def as_json(self) -> dict[str, object]:
        return {
            "frames": self.frames,
            "duplicates_dropped": self.duplicates,
            "outside_session_dropped": self.outside_span,
            "batches": self.batches,
            "late_batches": self.late_batches,
            "formats": sorted(self.formats),
            "first_t_device": self.first_t_device,
            "last_t_device": self.last_t_device,
            "first_t_server": self.first_t_server,
            "last_t_server": self.last_t_server,
        }


_Item = tuple[float, tuple[float, int], int, str, list[float], bool]


def merged_frames(batches: Iterable[BatchRow], stats: PoseStats) -> Iterator[_Item]:
    """Every frame once, by device time; `batches` must come ordered by `first_t`."""
    heap: list[_Item] = []
    latest_received: tuple[float, int] | None = None
    order = 0
    for batch in batches:
        stats.batches += 1
        if latest_received is not None and batch.received_rank < latest_received:
            stats.late_batches += 1
        latest_received = max(latest_received or batch.received_rank, batch.received_rank)
        while heap and heap[0][0] < batch.first_t:
            yield heapq.heappop(heap)
        for t, values in json.loads(batch.frames_json):
            order += 1
            heapq.heappush(
                heap, (t, batch.received_rank, order, batch.format, values, batch.session_match)
            )
    while heap:
        yield heapq.heappop(heap)


def write_pose(
    out: IO[str],
    batches: Iterable[BatchRow],
    clock_map: ClockMap,
    *,
    span: tuple[float, float],
    progress: Callable[[int], None] | None = None,
) -> PoseStats:
    """Write one NDJSON line per frame: t_device, t_server (6 decimals), format, keypoints."""
    stats = PoseStats()
    previous_t: float | None = None
    for t, _rank, _order, format, values, session_match in merged_frames(batches, stats):
        if t == previous_t:
            stats.duplicates += 1
            continue
        previous_t = t
        server = round(clock_map.to_server(t), 6)
        if not session_match and not span[0] <= server <= span[1]:
            stats.outside_span += 1
            continue
        keypoints = [values[i : i + 3] for i in range(0, len(values), 3)]
        out.write(
            json.dumps(
                {"t_device": t, "t_server": server, "format": format, "keypoints": keypoints},
                separators=(",", ":"),
                sort_keys=True,
            )
        )
        out.write("\n")
        stats.frames += 1
        stats.formats.add(format)
        if stats.first_t_device is None:
            stats.first_t_device, stats.first_t_server = t, server
        stats.last_t_device, stats.last_t_server = t, server
        if progress is not None and stats.frames % 5000 == 0:
            progress(stats.frames)
    return stats
