"""What an uploaded still is, whether it decodes, and its thumbnail. Pillow only, no Django.

The media type is judged by the file's first bytes, never by its name or the part's declared
type. Decoding is the integrity check: a JPEG is decoded in Pillow's draft mode (libjpeg
scales the DCT by 1/2, 1/4 or 1/8 while decoding), which still reads every entropy-coded byte,
so a truncated or broken stream fails while the full-resolution pixels are never built. That
one decode also gives the thumbnail. HEIC has no reduced decode, so it is decoded in full once.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pillow_heif
from PIL import ExifTags, Image, ImageFile, ImageOps

pillow_heif.register_heif_opener()

# Pillow's default, stated: a truncated image must fail to load, never come back grey-filled.
ImageFile.LOAD_TRUNCATED_IMAGES = False

THUMB_LONG_EDGE = 480
THUMB_QUALITY = 80
PREVIEW_LONG_EDGE = 2048
PREVIEW_QUALITY = 85
# ISO-BMFF brands of HEIF files whose main image is HEVC (what iPhones write), and the
# structural brands that such a file may carry as its major brand.
HEIC_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx"})
HEIF_STRUCTURAL_BRANDS = frozenset({b"mif1", b"msf1"})
SNIFF_BYTES = 64


class Undecodable(ValueError):
    """The file says it is a JPEG or HEIC but does not decode: corrupt or truncated."""


@dataclass(frozen=True)
class MediaType:
    content_type: str
    ext: str
    label: str


JPEG = MediaType("image/jpeg", "jpg", "JPEG")
HEIC = MediaType("image/heic", "heic", "HEIC")


def sniff(head: bytes) -> MediaType | None:
    """JPEG or HEIC from the first bytes of a file (at least SNIFF_BYTES), else None."""
    if head[:3] == b"\xff\xd8\xff":
        return JPEG
    if len(head) < 16 or head[4:8] != b"ftyp":
        return None
    box_size = int.from_bytes(head[:4], "big")
    major = head[8:12]
    # The compatible brands follow the minor version, up to the end of the ftyp box.
    end = min(box_size, len(head)) if box_size >= 16 else len(head)
    compatible = {head[i : i + 4] for i in range(16, end - 3, 4)}
    if major in HEIC_BRANDS:
        return HEIC
    if major in HEIF_STRUCTURAL_BRANDS and compatible & HEIC_BRANDS:
        return HEIC
    return None


def sniff_file(path: str | Path) -> MediaType | None:
    with open(path, "rb") as file:
        return sniff(file.read(SNIFF_BYTES))


@dataclass(frozen=True)
class Inspected:
    """A still that decoded, with its size as displayed (EXIF orientation applied)."""

    media: MediaType
    width: int
    height: int
    thumbnail: bytes
    thumb_width: int
    thumb_height: int


def _refuse_if_truncation_allowed() -> None:
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # A global switch another module may flip; with it on, truncated files would be kept.
        raise RuntimeError(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is on in this process, so truncated stills "
            "cannot be told apart; turn it off (it is a process-wide switch)."
        )


def _oriented_size(image: Image.Image, size: tuple[int, int]) -> tuple[int, int]:
    # EXIF orientations 5 to 8 turn the picture a quarter: width and height swap on display.
    orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    return (size[1], size[0]) if orientation in (5, 6, 7, 8) else size


def _encode_jpeg(image: Image.Image, long_edge: int, quality: int) -> tuple[bytes, int, int]:
    image = ImageOps.exif_transpose(image)
    if image.mode != "RGB":
        image = image.convert("RGB")
    image.thumbnail((long_edge, long_edge), Image.Resampling.BICUBIC)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality, optimize=False)
    return out.getvalue(), image.width, image.height


def inspect(source: str | Path | IO[bytes], media: MediaType) -> Inspected:
    """Decode the file as `media`, refusing anything corrupt or truncated (`Undecodable`), and
    render the thumbnail: about THUMB_LONG_EDGE px on the long edge, upright, JPEG."""
    _refuse_if_truncation_allowed()
    try:
        with Image.open(source, formats=[_pillow_format(media)]) as image:
            full = image.size
            width, height = _oriented_size(image, full)
            if media is JPEG:
                scale = THUMB_LONG_EDGE / max(full)
                if scale < 1:
                    # The smallest libjpeg scale that still covers the thumbnail in both axes.
                    image.draft("RGB", (math.ceil(full[0] * scale), math.ceil(full[1] * scale)))
            image.load()
            thumbnail, thumb_width, thumb_height = _encode_jpeg(
                image, THUMB_LONG_EDGE, THUMB_QUALITY
            )
    except Image.DecompressionBombError as exc:
        raise Undecodable(f"The {media.label} is too large to decode safely: {exc}") from None
    except Exception as exc:
        # A damaged file can make a decoder raise nearly anything (OSError for a truncated
        # stream, ValueError or SyntaxError for broken headers); every one means "unreadable".
        raise Undecodable(
            f"The file starts like a {media.label} but does not decode ({exc}); it is corrupt "
            "or cut short. Send it again from the camera roll."
        ) from None
    return Inspected(
        media=media,
        width=width,
        height=height,
        thumbnail=thumbnail,
        thumb_width=thumb_width,
        thumb_height=thumb_height,
    )


def preview(source: str | Path | IO[bytes], media: MediaType) -> bytes:
    """A large upright JPEG rendition, for browsers that cannot show the original (HEIC)."""
    _refuse_if_truncation_allowed()
    with Image.open(source, formats=[_pillow_format(media)]) as image:
        if media is JPEG:
            scale = PREVIEW_LONG_EDGE / max(image.size)
            if scale < 1:
                image.draft(
                    "RGB", (math.ceil(image.width * scale), math.ceil(image.height * scale))
                )
        image.load()
        data, _, _ = _encode_jpeg(image, PREVIEW_LONG_EDGE, PREVIEW_QUALITY)
    return data


def _pillow_format(media: MediaType) -> str:
    # Only the decoder the bytes were sniffed as may open the file: no format guessing.
    return "JPEG" if media is JPEG else "HEIF"
