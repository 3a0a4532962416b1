"""Pictures -> upright uint8 pixels: decoding, limits, EXIF orientation, transparency.

    >>> from digitrec.images import load_image
    >>> load_image("photo.jpg").pixels.shape        # (H, W) grey or (H, W, 3) RGB, uint8
    (400, 1000, 3)

Every way a picture comes in (a path, bytes, a PIL image, an array) ends here, and everything that
cannot be read ends in an ImageError with a one-line reason.
"""

from __future__ import annotations

import io
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from digitrec.errors import UsageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif")
# What those suffixes hold (JPEG includes a phone's MPO). Nothing else is opened, whatever its name
# says: each decoder is code that an untrusted file can reach.
FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "WEBP", "GIF")
MAX_PIXELS = 100_000_000  # refuse larger images from their header, before decoding them
DECODE_BUDGET = 1_000_000_000  # bytes one picture may take while it is decoded; larger declared canvases are refused
WORK_SIDE = 1600  # the reader searches pictures at this size (ink.WORK_MAX_SIDE) ...
REDUCE_ABOVE = 2 * WORK_SIDE  # ... so pictures with a longer side than this are decoded reduced, to no less than it
STRIP_ROWS = 256  # a big picture is brought to the reader's form this many output rows at a time
# Pillow keeps 1 byte per pixel for these modes, 2 for 16-bit grey and 4 for all the others.
ONE_BYTE_MODES = ("1", "L", "P")
ANIMATED_WEBP_COPIES = 4  # libwebp's animation decoder keeps its canvas, the previous one, and Pillow a copy
ORIENTATION = 0x0112  # the EXIF tag saying how the camera was held
TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
             5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
             8: Image.Transpose.ROTATE_90}  # EXIF orientation -> the turn that makes the picture upright
# Pillow warns through the process-wide warnings machinery, which cannot be caught per thread; one
# picture decodes at a time so that each picture's warnings become its own notes. This also bounds
# the memory that decoding takes when many pictures are read at once.
_DECODING = threading.Lock()


class ImageError(UsageError):
    """One picture cannot be read; the message says why, in one line."""


class NotAnImage(ImageError):
    """Not a picture in one of the formats read (PNG, JPEG, BMP, TIFF, WebP, GIF)."""


class TooLarge(ImageError):
    """A picture over the pixel limit, or one whose decoding would take more memory than allowed."""


@dataclass(frozen=True)
class Picture:
    pixels: np.ndarray  # (H, W) grey or (H, W, 3) RGB, uint8, upright, transparency on white
    notes: tuple[str, ...] = ()  # things the reader should be told, e.g. only one frame of an animation read
    scale: int = 1  # the picture file's pixels per pixel here: big pictures are decoded reduced


def load_image(source, max_pixels: int = MAX_PIXELS, decode_budget: int = DECODE_BUDGET) -> Picture:
    """Decode a file path, bytes, a PIL image or a numpy array into upright uint8 pixels.

    Raises ImageError with a one-line reason for anything that is not a readable picture: not a
    PNG, JPEG, BMP, TIFF, WebP or GIF (NotAnImage), over `max_pixels` or a decode that would take
    more than `decode_budget` bytes (TooLarge), damaged. Pictures with a side over REDUCE_ABOVE
    come back reduced by a whole factor (`scale`); of an animation only the first frame is decoded.

    >>> load_image("scan.png").pixels.shape
    (400, 1000, 3)
    """
    if isinstance(source, Picture):
        return source
    if isinstance(source, np.ndarray):
        return Picture(as_uint8_image(source))
    if isinstance(source, Image.Image):
        return _guarded(lambda: _decode(source, max_pixels, decode_budget), max_pixels)
    if isinstance(source, (bytes, bytearray, memoryview)):
        if not len(source):
            raise NotAnImage("empty (0 bytes)")
        return _open(io.BytesIO(source), max_pixels, decode_budget)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            if not path.exists():
                raise ImageError("no such file")
            if path.is_dir():
                raise ImageError("is a folder, not an image")
            if path.stat().st_size == 0:
                raise NotAnImage("empty file (0 bytes)")
            with open(path, "rb") as f:
                return _open(f, max_pixels, decode_budget)
        except OSError as e:
            raise ImageError(f"cannot read it ({e.strerror or e})") from None
    raise ImageError(f"cannot read an image from a {type(source).__name__}")


def images_in(folder: str | os.PathLike) -> list[Path]:
    """The picture files directly in a folder (known suffixes, not hidden), sorted by name."""
    return sorted(p for p in Path(folder).iterdir()
                  if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file())


def decode_cost(img: Image.Image) -> int:
    """Bytes that decoding this opened (not yet loaded) picture at its current size takes."""
    w, h = img.size
    per_pixel = 1 if img.mode in ONE_BYTE_MODES else 2 if img.mode.startswith("I;16") else 4
    copies = ANIMATED_WEBP_COPIES if img.format == "WEBP" and getattr(img, "n_frames", 1) > 1 else 1
    return w * h * per_pixel * copies


def _open(f, max_pixels: int, decode_budget: int) -> Picture:
    def decode():
        with Image.open(f, formats=FORMATS) as img:
            return _decode(img, max_pixels, decode_budget)
    return _guarded(decode, max_pixels)


def _guarded(decode, max_pixels: int) -> Picture:
    """Run a decode with Pillow's warnings caught as notes and its every exception as an ImageError."""
    with _DECODING, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # Pillow's own bomb check stands down: the pixel limit and the decode budget apply instead.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            picture = decode()
        except (ImageError, MemoryError):
            raise
        except UnidentifiedImageError:
            raise NotAnImage("not an image, or in a format that cannot be read "
                             "(PNG, JPEG, BMP, TIFF, WebP and GIF can)") from None
        except Image.DecompressionBombError:
            raise TooLarge(f"larger than the {max_pixels / 1e6:g}-megapixel limit") from None
        except Exception as e:  # any decoder's failure on a damaged file: one line, no library paths
            raise ImageError(f"damaged or unsupported picture ({one_line(e)})") from None
    notes = tuple(dict.fromkeys(f"the decoder warned: {one_line(w.message)}" for w in caught))
    return Picture(picture.pixels, picture.notes + notes, picture.scale)


def one_line(e: BaseException | Warning | str) -> str:
    """An exception or warning as one short line: no newlines, no file paths, at most 160 characters."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _decode(img: Image.Image, max_pixels: int, decode_budget: int) -> Picture:
    w, h = img.size
    if w * h > max_pixels:
        raise TooLarge(f"{w}x{h} pixels is larger than the {max_pixels / 1e6:g}-megapixel limit")
    if w * h == 0:
        raise ImageError("the image has no pixels")
    notes = ()
    if getattr(img, "is_animated", False):
        notes = (f"animated {img.format or 'image'} with {img.n_frames} frames: only the first frame was read",)
        if img.tell():
            img.seek(0)
    orientation = _orientation(img)
    scale = max(1, max(w, h) // WORK_SIDE) if max(w, h) > REDUCE_ABOVE else 1
    if scale > 1 and img.format in ("JPEG", "MPO") and img.mode in ("L", "RGB", "CMYK", "YCbCr"):
        img.draft(img.mode, (-(-w // scale), -(-h // scale)))  # the JPEG decoder reduces by 2, 4 or 8 on its own
    cost = decode_cost(img)
    if cost > decode_budget:
        raise TooLarge(f"{w}x{h} pixels would take {cost / 1e9:.2g} GB to decode, more than the "
                       f"{decode_budget / 1e9:g} GB allowed")
    try:
        img.load()
    except MemoryError:
        raise
    except Exception as e:
        raise ImageError(f"truncated or corrupt {img.format or 'image'} ({one_line(e)})") from None
    scale = max(1, round(max(w, h) / max(img.size)))  # what the JPEG decoder did
    rest = max(1, max(img.size) // WORK_SIDE) if max(img.size) > REDUCE_ABOVE else 1
    rest = min(rest, *img.size)  # a strip one pixel wide stays at least one pixel wide
    if rest > 1:
        img, scale = _reduced(img, rest), scale * rest
    if orientation in TRANSPOSE:
        img = img.transpose(TRANSPOSE[orientation])
    return Picture(_pil_pixels(img), notes, scale)


def _orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(ORIENTATION, 1))
    except Exception:
        return 1  # a broken orientation tag: keep the pixels as stored


def _reduced(img: Image.Image, k: int) -> Image.Image:
    """The picture made k times smaller by averaging, a strip at a time: the full-size copy in the
    reader's mode (4 bytes a pixel for a 1-byte palette picture) is never made."""
    mode = _work_mode(img)
    w, h = img.size
    out = Image.new(mode, (w // k, h // k), "white" if mode != "F" else 0)
    for y in range(0, h // k, STRIP_ROWS):
        rows = min(STRIP_ROWS, h // k - y)
        strip = img.crop((0, y * k, (w // k) * k, (y + rows) * k))
        strip = strip.convert("LA") if strip.mode == "La" else strip  # Pillow converts La to nothing else
        out.paste(strip.convert(mode).reduce(k), (0, y))
    return out


def _work_mode(img: Image.Image) -> str:
    """The mode _pil_pixels reads a picture in: grey, RGB, RGBA, or 32-bit for deep pictures."""
    mode = img.mode
    if mode == "F":
        return "F"
    if mode == "I" or mode.startswith("I;16"):
        return "I"
    if mode in ("1", "L"):
        return "L"
    if mode in ("LA", "La", "PA", "RGBA", "RGBa") or (mode == "P" and "transparency" in img.info):
        return "RGBA"
    return "RGB"


def _pil_pixels(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode in ("La", "RGBa"):  # premultiplied alpha, as Pillow's own filters leave it
        img, mode = img.convert(mode.upper()), mode.upper()
    if mode in ("I", "F") or mode.startswith("I;16"):
        return as_uint8_image(np.asarray(img), sixteen_bit=mode != "F")
    if mode in ("1", "L"):
        return np.asarray(img.convert("L"))
    if mode == "P" and "transparency" in img.info:
        try:
            return as_uint8_image(np.asarray(img.convert("RGBA")))
        except ValueError:  # a transparency chunk naming colours the palette lacks: read it opaque
            img.info.pop("transparency")
            return np.asarray(img.convert("RGB"))
    if mode in ("LA", "PA", "RGBA"):
        return as_uint8_image(np.asarray(img.convert("RGBA")))
    return np.asarray(img.convert("RGB"))


def as_uint8_image(a: np.ndarray, sixteen_bit: bool = True) -> np.ndarray:
    """Any image array -> (H, W) or (H, W, 3) uint8: alpha composited on white, wide types scaled.

    Integer types wider than 8 bits are taken as 16-bit; floats as 0-1 (or 0-255 if larger).

    >>> as_uint8_image(np.zeros((4, 4, 4), np.float32)).shape   # transparent black -> white
    (4, 4, 3)
    """
    a = np.asarray(a)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))):
        raise ImageError(f"expected an image array of shape (H, W), (H, W, 3) or (H, W, 4), got {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ImageError("the image has no pixels")
    if a.dtype == np.uint8:
        f = None
    elif a.dtype == bool:
        f = a.astype(np.float32) * 255
    elif np.issubdtype(a.dtype, np.integer):
        top = float(a.max())
        f = a.astype(np.float32) * (255 / (65535 if sixteen_bit and top <= 65535 else max(top, 255)) if top > 255 else 1)
    elif np.issubdtype(a.dtype, np.floating):
        f = np.nan_to_num(a.astype(np.float32))
        f = f * 255 if f.max() <= 1 else f
    else:
        raise ImageError(f"cannot read an image array of type {a.dtype}")
    if f is not None:
        a = np.clip(f + 0.5, 0, 255).astype(np.uint8)
    if a.ndim == 3 and a.shape[2] == 4:
        alpha = a[:, :, 3:].astype(np.float32) / 255
        a = (a[:, :, :3] * alpha + 255 * (1 - alpha) + 0.5).astype(np.uint8)
    return np.ascontiguousarray(a)


def to_gray(pixels: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, 3|4) image -> (H, W) uint8 luminance."""
    pixels = as_uint8_image(pixels)
    return pixels if pixels.ndim == 2 else cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)
