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
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from digitrec.errors import UsageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif")
MAX_PIXELS = 100_000_000  # refuse larger images from their header, before decoding them


class ImageError(UsageError):
    """One picture cannot be read; the message says why, in one line."""


@dataclass(frozen=True)
class Picture:
    pixels: np.ndarray  # (H, W) grey or (H, W, 3) RGB, uint8, upright, transparency on white
    notes: tuple[str, ...] = ()  # things the reader should be told, e.g. only one frame of an animation read


def load_image(source) -> Picture:
    """Decode a file path, bytes, a PIL image or a numpy array into upright uint8 pixels.

    Raises ImageError with a one-line reason for anything that is not a readable picture.

    >>> load_image("scan.png").pixels.shape
    (400, 1000, 3)
    """
    if isinstance(source, Picture):
        return source
    if isinstance(source, np.ndarray):
        return Picture(as_uint8_image(source))
    if isinstance(source, Image.Image):
        return _from_pil(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        if not len(source):
            raise ImageError("empty (0 bytes)")
        return _open(io.BytesIO(source))
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise ImageError("no such file")
        if path.is_dir():
            raise ImageError("is a folder, not an image")
        try:
            if path.stat().st_size == 0:
                raise ImageError("empty file (0 bytes)")
            with open(path, "rb") as f:
                return _open(f)
        except OSError as e:
            raise ImageError(f"cannot read it ({e.strerror or e})") from None
    raise ImageError(f"cannot read an image from a {type(source).__name__}")


def images_in(folder: str | os.PathLike) -> list[Path]:
    """The picture files directly in a folder (known suffixes, not hidden), sorted by name."""
    return sorted(p for p in Path(folder).iterdir()
                  if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file())


def _open(f) -> Picture:
    try:
        img = Image.open(f)
    except UnidentifiedImageError:
        raise ImageError("not an image, or in a format that cannot be read "
                         "(PNG, JPEG, BMP, TIFF, WebP and GIF can)") from None
    except Image.DecompressionBombError:
        raise ImageError(f"larger than the {MAX_PIXELS // 1_000_000}-megapixel limit") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise ImageError(f"corrupt image ({e})") from None
    with img:
        w, h = img.size
        if w * h > MAX_PIXELS:
            raise ImageError(f"{w}x{h} pixels is larger than the {MAX_PIXELS // 1_000_000}-megapixel limit")
        if w * h == 0:
            raise ImageError("the image has no pixels")
        try:
            img.load()
        except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as e:
            raise ImageError(f"truncated or corrupt {img.format or 'image'} ({e})") from None
        return _from_pil(img)


def _from_pil(img: Image.Image) -> Picture:
    notes = ()
    if getattr(img, "is_animated", False):
        notes = (f"animated {img.format or 'image'} with {img.n_frames} frames: only the first frame was read",)
        img.seek(0)
    try:
        img = ImageOps.exif_transpose(img)
    except (OSError, ValueError, TypeError, SyntaxError):
        pass  # a broken orientation tag: keep the pixels as stored
    return Picture(_pil_pixels(img), notes)


def _pil_pixels(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode in ("I", "F") or mode.startswith("I;16"):
        return as_uint8_image(np.asarray(img), sixteen_bit=mode != "F")
    if mode in ("1", "L"):
        return np.asarray(img.convert("L"))
    if mode in ("LA", "La", "PA", "RGBA", "RGBa") or (mode == "P" and "transparency" in img.info):
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
