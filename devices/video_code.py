"""Frame codes: who made a video frame and when, drawn into its pixels.

A code is 8 bits of source (which publisher) and 32 bits of stamp (monotonic milliseconds,
modulo 2**32, when the frame was made), followed by an 8-bit CRC, as big black and white
cells at the bottom-left of the picture, on a black panel that keeps the scene off them. The
cells are large enough to survive lossy VP8 and H.264 at their default WebRTC bitrates, so a
frame that went through a publisher, a relay and a viewer still says where and when it began:
subtract its stamp from `stamp_now()` and that is its glass-to-glass age.

Clocks: `stamp_now()` reads CLOCK_MONOTONIC, which is one clock for the whole machine, so a
stamp made in one process (the simulator) can be aged in another (the server's relay), but
not across machines.

Layout, for a frame `width` pixels wide: cells of `max(12, width // 40)` px, 3 rows of 18.
Each row starts with a white and a black marker cell (a row without them is no code at all:
plain pictures read as None, not as zeros), then 16 data cells, most significant bit first:
row 0 holds the source and the stamp's top byte, and so on, the CRC last.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import NamedTuple

import av
from PIL import Image, ImageDraw

ROWS = 3
DATA_COLS = 16
MARKERS = (True, False)  # white, black: the start of every row
COLS = len(MARKERS) + DATA_COLS
STAMP_MASK = 0xFFFFFFFF
# Luma of the cells in limited-range video, as an RGB black and white convert to.
BLACK_Y = 16
WHITE_Y = 235
THRESHOLD_Y = 128
# Formats whose first plane is the luma: read them as they are.
_LUMA_FIRST = frozenset(
    {"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "nv12", "nv21", "gray"}
)


@dataclass(frozen=True)
class FrameCode:
    source: int  # 0..255, identifies the publisher (the simulator uses phone.index)
    stamp_ms: int  # 0..2**32-1, monotonic milliseconds mod 2**32 when the frame was made

    def __post_init__(self) -> None:
        if not 0 <= self.source <= 0xFF:
            raise ValueError(f"a frame code's source is 0..255, not {self.source}")
        if not 0 <= self.stamp_ms <= STAMP_MASK:
            raise ValueError(f"a frame code's stamp is 0..2**32-1, not {self.stamp_ms}")


def stamp_now() -> int:
    return int(time.monotonic() * 1000) & STAMP_MASK


def age_ms(stamp_ms: int, now_ms: int | None = None) -> int:
    """How long ago `stamp_ms` was, modulo 2**32: a stamp a little in the future (from a
    process that read the clock just after this one) comes out slightly negative."""
    now = stamp_now() if now_ms is None else now_ms
    diff = (now - stamp_ms) & STAMP_MASK
    return diff - (1 << 32) if diff >= 1 << 31 else diff


# --- Bits -----------------------------------------------------------------------------------


def _crc8_table() -> list[int]:
    # CRC-8/AUTOSAR (polynomial 0x2F): Hamming distance 4 over messages this short.
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x2F) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
        table.append(crc)
    return table


_CRC8 = _crc8_table()


def _crc8(data: bytes) -> int:
    crc = 0xFF
    for byte in data:
        crc = _CRC8[crc ^ byte]
    return crc ^ 0xFF


def _bits(code: FrameCode) -> list[bool]:
    payload = bytes([code.source]) + code.stamp_ms.to_bytes(4, "big")
    value = int.from_bytes(payload + bytes([_crc8(payload)]), "big")
    total = ROWS * DATA_COLS
    return [bool(value >> (total - 1 - i) & 1) for i in range(total)]


def _rows(code: FrameCode) -> list[list[bool]]:
    bits = _bits(code)
    return [list(MARKERS) + bits[r * DATA_COLS : (r + 1) * DATA_COLS] for r in range(ROWS)]


def _decode_bits(bits: list[bool]) -> FrameCode | None:
    value = 0
    for bit in bits:
        value = value << 1 | bit
    raw = value.to_bytes(ROWS * DATA_COLS // 8, "big")
    if _crc8(raw[:5]) != raw[5]:
        return None
    return FrameCode(source=raw[0], stamp_ms=int.from_bytes(raw[1:5], "big"))


# --- Geometry -------------------------------------------------------------------------------


class _Geometry(NamedTuple):
    cell: int
    x0: int  # the first cell's top-left corner
    y0: int
    pad: int  # the black panel's border around the cells

    @property
    def panel(self) -> tuple[int, int, int, int]:
        """left, top, right, bottom (exclusive)."""
        return (
            self.x0 - self.pad,
            self.y0 - self.pad,
            self.x0 + COLS * self.cell + self.pad,
            self.y0 + ROWS * self.cell + self.pad,
        )


def _geometry(width: int, height: int) -> _Geometry | None:
    """Where the code goes in a frame of this size; None when it does not fit."""
    cell = max(12, width // 40)
    pad = cell // 2
    margin = cell // 2  # between the panel and the frame's edges
    x0 = margin + pad
    y0 = height - margin - pad - ROWS * cell
    if x0 + COLS * cell + pad + margin > width or y0 - pad - margin < 0:
        return None
    return _Geometry(cell=cell, x0=x0, y0=y0, pad=pad)


def _fitting(width: int, height: int) -> _Geometry:
    geometry = _geometry(width, height)
    if geometry is None:
        raise ValueError(f"a {width}x{height} frame is too small for a frame code")
    return geometry


# --- Writing --------------------------------------------------------------------------------


def draw(image: Image.Image, code: FrameCode) -> None:
    """Draw `code` onto an RGB image, in place. Raises ValueError if the image is too small
    (narrower than about 240 px or shorter than about 60 px)."""
    geometry = _fitting(*image.size)
    cell = geometry.cell
    canvas = ImageDraw.Draw(image)
    left, top, right, bottom = geometry.panel
    canvas.rectangle((left, top, right - 1, bottom - 1), fill=(0, 0, 0))
    for r, row in enumerate(_rows(code)):
        y = geometry.y0 + r * cell
        for c, bit in enumerate(row):
            if bit:
                x = geometry.x0 + c * cell
                canvas.rectangle((x, y, x + cell - 1, y + cell - 1), fill=(255, 255, 255))


def _shade_yuv(shade: int) -> tuple[int, int, int]:
    # Spread the shades over the hue circle and a few brightnesses: 8 sources look apart.
    luma = 70 + (shade * 53) % 120
    u = 128 + ((shade * 37) % 96) - 48
    v = 128 + ((shade * 71) % 96) - 48
    return luma, u, v


def coded_frame(width: int, height: int, code: FrameCode, *, shade: int = 0) -> av.VideoFrame:
    """A plain yuv420p frame carrying `code`, built as planes of bytes (no PIL): cheap
    enough to feed encoders and relays in benchmarks. `shade` picks the background colour."""
    geometry = _fitting(width, height)
    frame = av.VideoFrame(width, height, "yuv420p")
    luma, u, v = _shade_yuv(shade)

    plane = frame.planes[0]
    stride = plane.line_size
    pixels = bytearray([luma]) * (stride * plane.height)
    cell = geometry.cell
    left, top, right, bottom = geometry.panel
    panel = bytes([BLACK_Y]) * (right - left)
    for y in range(top, bottom):
        pixels[y * stride + left : y * stride + right] = panel
    black, white = bytes([BLACK_Y]) * cell, bytes([WHITE_Y]) * cell
    for r, row in enumerate(_rows(code)):
        span = b"".join(white if bit else black for bit in row)
        start_x = geometry.x0
        for y in range(geometry.y0 + r * cell, geometry.y0 + (r + 1) * cell):
            pixels[y * stride + start_x : y * stride + start_x + len(span)] = span
    plane.update(bytes(pixels))

    for chroma_plane, value in ((frame.planes[1], u), (frame.planes[2], v)):
        size = chroma_plane.line_size * chroma_plane.height
        chroma = bytearray([value]) * size
        # Neutral chroma under the panel, so the cells stay black and white.
        c_stride = chroma_plane.line_size
        c_left, c_right = left // 2, (right + 1) // 2
        neutral = bytes([128]) * (c_right - c_left)
        for y in range(top // 2, (bottom + 1) // 2):
            chroma[y * c_stride + c_left : y * c_stride + c_right] = neutral
        chroma_plane.update(bytes(chroma))
    return frame


# --- Reading --------------------------------------------------------------------------------


def read(frame: av.VideoFrame) -> FrameCode | None:
    """The code in a (decoded) frame, or None when there is none or it does not check out.

    Reads the luma only: the mean of 9 pixels at the centre of each cell, against mid-grey.
    Well under a millisecond at 640x480 for a yuv420p frame; other formats are converted
    first, which costs more."""
    geometry = _geometry(frame.width, frame.height)
    if geometry is None:
        return None
    if frame.format.name not in _LUMA_FIRST:
        frame = frame.reformat(format="yuv420p")
    plane = frame.planes[0]
    stride = plane.line_size
    pixels = memoryview(plane)
    cell = geometry.cell
    step = max(1, cell // 6)
    offsets = [dy * stride + dx for dy in (-step, 0, step) for dx in (-step, 0, step)]
    threshold = THRESHOLD_Y * len(offsets)
    bits: list[bool] = []
    for r in range(ROWS):
        centre_y = geometry.y0 + r * cell + cell // 2
        base = centre_y * stride + geometry.x0 + cell // 2
        row = []
        for c in range(COLS):
            centre = base + c * cell
            row.append(sum(pixels[centre + offset] for offset in offsets) >= threshold)
        if tuple(row[: len(MARKERS)]) != MARKERS:
            return None
        bits.extend(row[len(MARKERS) :])
    return _decode_bits(bits)
