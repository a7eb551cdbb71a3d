"""The camera of a virtual iPhone: a shutter that fires on time, and the picture it takes.

The shutter (`wait_until`) is what makes a capture-all line up across phones: each phone
maps the server's `fire_at` onto its own clock and waits for that instant. `asyncio.sleep`
alone wakes a few milliseconds late (the loop's timer granularity, other phones' work), so it
sleeps to just before the instant and then yields in a tight loop until the clock reaches it.

The picture (`render_still`) is a real JPEG with the EXIF a phone writes: a synthetic studio
scene whose framing follows the lens (the wider the lens, the smaller the subject), with the
camera's name, lens, zoom, capture time and flip written on it. It takes tens to hundreds of
milliseconds, so callers run it off the event loop (`asyncio.to_thread`), after the shutter.
"""

from __future__ import annotations

import asyncio
import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from PIL import ExifTags, Image, ImageDraw, ImageFont, ImageOps
from PIL.TiffImagePlugin import IFDRational

DEFAULT_STILL_SIZE = (2016, 1512)
JPEG_QUALITY = 85
# Sleep until this long before the instant, then yield-and-check: the loop's sleep is coarse.
SPIN_S = 0.005
# A phone's main (1x) sensor is about this much smaller than 35 mm film; used to turn the
# 35 mm-equivalent focal length into a plausible physical one for EXIF.
CROP_FACTOR = 3.5
# The scene: the subject stands this far from every camera, on a floor at y = 0 (metres).
SUBJECT_DISTANCE_M = 3.0

RGB = tuple[int, int, int]


# --- The shutter ----------------------------------------------------------------------------


async def wait_until(clock: Callable[[], float], target: float) -> float:
    """Wait until `clock()` reaches `target` and return the reading at that instant.

    `clock` is the phone's own clock (unix seconds). Returns at once, with the current
    reading, when the target has already passed. The last `SPIN_S` are spent yielding to the
    loop rather than sleeping, so other phones firing at the same instant are not delayed by
    this one, and none of them depends on the timer's resolution.
    """
    remaining = target - clock()
    if remaining > SPIN_S:
        await asyncio.sleep(remaining - SPIN_S)
    while True:
        now = clock()
        if now >= target:
            return now
        await asyncio.sleep(0)


# --- The picture ----------------------------------------------------------------------------


@dataclass(frozen=True)
class StillSpec:
    camera: str
    model: str
    index: int  # the phone's number; it stands at its own angle around the subject
    lens: str
    zoom: float
    hfov_deg: float  # the field of view after digital zoom
    flip_horizontal: bool
    flip_vertical: bool
    captured_at: float  # device clock, unix s
    sequence: int
    size: tuple[int, int] = DEFAULT_STILL_SIZE


def still_filename(sequence: int) -> str:
    return f"IMG_{sequence:04d}.JPG"


def parse_size(text: str) -> tuple[int, int] | None:
    """'2016x1512' → (2016, 1512); None when it is not WIDTHxHEIGHT."""
    width, sep, height = text.lower().partition("x")
    try:
        return (int(width), int(height)) if sep else None
    except ValueError:
        return None


def parse_still_size(text: str) -> tuple[int, int]:
    """'2016x1512' → (2016, 1512); a clear ValueError for anything else."""
    size = parse_size(text)
    if size is None or not (64 <= size[0] <= 12000 and 64 <= size[1] <= 12000):
        raise ValueError(
            f"{text!r} is not a still size: give WIDTHxHEIGHT, each 64..12000, e.g. 2016x1512."
        )
    return size


def human_size(n_bytes: int) -> str:
    if n_bytes >= 1_000_000:
        return f"{n_bytes / 1_000_000:.1f} MB"
    return f"{n_bytes / 1000:.0f} kB"


def effective_hfov_deg(native_hfov_deg: float, digital_zoom: float) -> float:
    half = math.radians(native_hfov_deg) / 2
    return math.degrees(2 * math.atan(math.tan(half) / max(1.0, digital_zoom)))


def focal_length_35mm(hfov_deg: float) -> float:
    # 36 mm is the width of a 35 mm frame.
    return 36.0 / (2 * math.tan(math.radians(hfov_deg) / 2))


def capture_time_text(captured_at: float) -> str:
    moment = datetime.fromtimestamp(captured_at, UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d} UTC"


class _View:
    """Maps scene metres (x right, y up, subject at x = 0) to pixels for one framing."""

    def __init__(self, spec: StillSpec) -> None:
        width, height = spec.size
        frame_width_m = 2 * SUBJECT_DISTANCE_M * math.tan(math.radians(spec.hfov_deg) / 2)
        self.scale = width / frame_width_m
        # Wide framings aim at the middle of the body; long lenses at the face.
        self.aim_y = min(1.62, 1.0 + 0.2 * spec.zoom)
        self.cx = width / 2
        self.cy = height / 2

    def point(self, x: float, y: float) -> tuple[float, float]:
        return self.cx + x * self.scale, self.cy - (y - self.aim_y) * self.scale

    def box(self, left: float, bottom: float, right: float, top: float) -> list[float]:
        x0, y0 = self.point(left, top)
        x1, y1 = self.point(right, bottom)
        return [x0, y0, x1, y1]

    def length(self, metres: float) -> float:
        return metres * self.scale


def _gradient(size: tuple[int, int], top: RGB, bottom: RGB) -> Image.Image:
    # A 256-step ramp stretched to the frame: cheap even at 12 MP.
    ramp = Image.linear_gradient("L").resize(size, Image.Resampling.BILINEAR)
    return ImageOps.colorize(ramp, black=top, white=bottom)


def _draw_scene(image: Image.Image, spec: StillSpec) -> None:
    width, height = spec.size
    view = _View(spec)
    draw = ImageDraw.Draw(image)

    # The floor, from the horizon of the studio wall down.
    _, floor_y = view.point(0, 0)
    floor_top = max(0, min(height, round(floor_y)))
    if floor_top < height:
        floor = _gradient((width, height - floor_top), (196, 170, 140), (120, 96, 78))
        image.paste(floor, (0, floor_top))

    # Props behind the subject shift with the camera's angle around it, so every phone's
    # still looks a little different, as it would from another stand.
    shift = 1.8 * math.sin(spec.index * 0.82)
    draw.ellipse(view.box(shift - 1.3, 0.4, shift + 1.3, 3.0), fill=(250, 206, 150))
    draw.ellipse(view.box(shift - 0.9, 0.8, shift + 0.9, 2.6), fill=(252, 224, 180))
    for side in (-1, 1):
        stand_x = shift + side * 2.3
        draw.line(
            [view.point(stand_x, 0), view.point(stand_x, 2.0)],
            fill=(60, 60, 70),
            width=max(1, round(view.length(0.025))),
        )
        draw.rounded_rectangle(
            view.box(stand_x - 0.35, 1.9, stand_x + 0.35, 2.5),
            radius=view.length(0.05),
            fill=(245, 245, 240),
            outline=(90, 90, 100),
            width=max(1, round(view.length(0.02))),
        )
    plant_x = shift - 3.2
    draw.rectangle(view.box(plant_x - 0.18, 0, plant_x + 0.18, 0.45), fill=(170, 90, 60))
    for dx, dy, r in ((0, 0.9, 0.35), (-0.25, 0.7, 0.25), (0.25, 0.75, 0.28), (0, 1.2, 0.22)):
        draw.ellipse(
            view.box(plant_x + dx - r, dy - r, plant_x + dx + r, dy + r), fill=(70, 140, 90)
        )

    # The subject: shadow, legs, arms, torso, neck, head, hair, face.
    draw.ellipse(view.box(-0.45, -0.06, 0.45, 0.06), fill=(100, 80, 66))
    for side in (-1, 1):
        draw.rounded_rectangle(
            view.box(min(side * 0.04, side * 0.17), 0, max(side * 0.04, side * 0.17), 0.9),
            radius=view.length(0.04),
            fill=(52, 72, 120),
        )
        draw.rounded_rectangle(
            view.box(min(side * 0.22, side * 0.31), 0.82, max(side * 0.22, side * 0.31), 1.44),
            radius=view.length(0.045),
            fill=(226, 96, 86),
        )
    draw.rounded_rectangle(
        view.box(-0.23, 0.85, 0.23, 1.47), radius=view.length(0.08), fill=(236, 112, 99)
    )
    draw.rectangle(view.box(-0.05, 1.42, 0.05, 1.53), fill=(224, 172, 140))
    draw.ellipse(view.box(-0.1, 1.5, 0.1, 1.76), fill=(234, 184, 150))
    draw.chord(view.box(-0.11, 1.58, 0.11, 1.79), start=180, end=360, fill=(66, 44, 34))
    for side in (-1, 1):
        x = side * 0.037
        draw.ellipse(view.box(x - 0.012, 1.632, x + 0.012, 1.656), fill=(40, 30, 30))
    draw.arc(
        view.box(-0.04, 1.565, 0.04, 1.615),
        start=20,
        end=160,
        fill=(150, 60, 60),
        width=max(1, round(view.length(0.008))),
    )


def _draw_caption(image: Image.Image, spec: StillSpec) -> None:
    width, _ = spec.size
    big = ImageFont.load_default(size=max(12, width // 24))
    small = ImageFont.load_default(size=max(10, width // 60))
    flip = (
        f"flip: horizontal {'on' if spec.flip_horizontal else 'off'}, "
        f"vertical {'on' if spec.flip_vertical else 'off'}"
    )
    lines: list[tuple[str, ImageFont.FreeTypeFont]] = [
        (spec.camera, big),
        (f"{spec.model}  ·  {spec.lens} {spec.zoom:g}x", small),
        (capture_time_text(spec.captured_at) + " (device clock)", small),
        (flip, small),
        (still_filename(spec.sequence), small),
    ]
    margin = width // 40
    pad = width // 80
    gap = width // 160
    heights = [font.getbbox(text)[3] for text, font in lines]
    box_width = max(round(font.getlength(text)) for text, font in lines) + 2 * pad
    box_height = sum(heights) + gap * (len(lines) - 1) + 2 * pad
    box = (margin, margin, margin + box_width, margin + box_height)
    # A translucent panel: blend only the panel's pixels, not the whole (possibly 12 MP) frame.
    region = image.crop(box)
    image.paste(Image.blend(region, Image.new("RGB", region.size, (20, 20, 28)), 0.6), box)
    draw = ImageDraw.Draw(image)
    y = margin + pad
    for (text, font), line_height in zip(lines, heights, strict=True):
        draw.text((margin + pad, y), text, font=font, fill=(255, 255, 255))
        y += line_height + gap


def still_exif(spec: StillSpec) -> Image.Exif:
    moment = datetime.fromtimestamp(spec.captured_at, UTC)
    stamp = moment.strftime("%Y:%m:%d %H:%M:%S")
    focal_35 = focal_length_35mm(spec.hfov_deg)
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "Apple"
    exif[ExifTags.Base.Model] = spec.model
    exif[ExifTags.Base.Software] = "MotionMix simulator"
    exif[ExifTags.Base.Orientation] = 1
    exif[ExifTags.Base.DateTime] = stamp
    exif[ExifTags.Base.ImageDescription] = f"{spec.camera}, {spec.lens} {spec.zoom:g}x"
    exif[ExifTags.Base.Artist] = spec.camera
    details = exif.get_ifd(ExifTags.IFD.Exif)
    details[ExifTags.Base.DateTimeOriginal] = stamp
    details[ExifTags.Base.SubsecTimeOriginal] = f"{moment.microsecond // 1000:03d}"
    details[ExifTags.Base.OffsetTimeOriginal] = "+00:00"
    details[ExifTags.Base.LensMake] = "Apple"
    details[ExifTags.Base.LensModel] = f"{spec.model} back camera {spec.lens} {spec.zoom:g}x"
    details[ExifTags.Base.FocalLength] = IFDRational(round(focal_35 / CROP_FACTOR * 100), 100)
    details[ExifTags.Base.FocalLengthIn35mmFilm] = round(focal_35)
    details[ExifTags.Base.ExifImageWidth] = spec.size[0]
    details[ExifTags.Base.ExifImageHeight] = spec.size[1]
    return exif


def render_still(spec: StillSpec) -> bytes:
    """The JPEG a phone would write for this capture. CPU-bound: run it off the event loop."""
    image = _gradient(spec.size, (96, 140, 196), (236, 226, 214))
    _draw_scene(image, spec)
    # Flip is not applied to the pixels: the phone writes what its sensor sees, the still
    # records the flip, and the Live Director mirrors every view of this camera itself.
    _draw_caption(image, spec)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=JPEG_QUALITY, exif=still_exif(spec))
    return out.getvalue()
