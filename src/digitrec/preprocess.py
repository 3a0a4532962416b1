"""Images -> MNIST-style digits: decode a picture, find the ink, split it into digits, shape each like MNIST.

MNIST digits are white ink on black, fitted into a 20x20 box with their aspect ratio kept, anti-aliased,
and placed in a 28x28 field with their centre of mass at the centre. A model trained on them only reads
other pictures well once they are brought into that form, which is what this module does:

    >>> from digitrec.preprocess import load_image, extract_digits
    >>> picture = load_image("photo.jpg")          # upright, alpha on white, (H, W) or (H, W, 3) uint8
    >>> crops = extract_digits(picture.pixels)      # in reading order
    >>> [(c.box, c.line) for c in crops]            # (x, y, w, h) in the photo's pixels
    [((112, 80, 61, 98), 0), ((190, 76, 70, 103), 0)]
    >>> crops[0].image.shape, crops[0].image.dtype
    ((28, 28), dtype('uint8'))

Nothing here knows about models: the crops go to whatever classifies them (see recognize.py).
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

# Finding the ink.
WORK_MAX_SIDE = 1600  # larger pictures are searched at this size (boxes are mapped back)
BG_SMALL_SIDE = 96  # the paper's brightness is estimated on a copy this small (shorter side) ...
BG_WINDOW = 31  # ... with filters this wide there: a third of the picture, wider than any stroke
BLOB_FILL = 0.15  # a median this much darker than a closing (lighter on a board) may sit inside a thick stroke
EDGE_STEP = 0.25  # paper brightness changing this much from one cell to the next: an edge (a page on a desk)
NOISE_SIGMAS = 4.0  # ink must stand this many noise deviations above the paper
MIN_CONTRAST = 0.1  # and be at least this much darker than the paper around it (lighter on a board)
MASK_LEVEL = 0.12  # strokes are where ink exceeds this fraction of the typical ink strength
PAPER_FLOOR = 16  # grey level below which a board counts as this bright (ink is a ratio to it)

# Ruled lines (notebook rules, graph paper, a margin) are erased before digits are looked for.
RULE_SPAN = 0.75  # a rule crosses at least this much of the picture (half if it runs out of it) ...
RULE_MIN_LENGTH = 100  # ... and at least this many pixels ...
RULE_RUN = 0.04  # ... in straight runs at least this long (also as a fraction of the picture's side) ...
RULE_THICKNESS = 0.015  # ... and is at most this thick (fraction of the picture's other side, 4 pixels at least)
RULE_POOL = 4  # which runs form one rule is worked out on a copy this many times smaller

# Telling digits from other marks (sizes in pixels of the searched picture).
SPECK_AREA = 0.004  # pieces smaller than this fraction of the largest piece are specks
MIN_DIGIT_PX = 8  # digits shorter than this cannot be read
MIN_HEIGHT_RATIO = 0.4  # a digit is at least this fraction of the tallest one in its line ...
MIN_GLOBAL_HEIGHT_RATIO = 0.2  # ... and of the tallest one in the picture
MAX_ASPECT = 3.0  # wider than this many heights: a line or a dash, not one digit
BLOB_DENSITY = 0.9  # a wide box filled more than this is a blot, not a digit (a bold 8 fills 0.8)
MIN_STRENGTH = 1.5  # a digit's ink is at least this many times the ink threshold

# Joining the pieces of one digit (a 5's detached bar, a broken 4), never neighbours.
JOIN_OVERLAP = 0.5  # horizontal overlap, as a fraction of the narrower piece
JOIN_GAP = 0.35  # largest vertical gap, as a fraction of the taller piece
JOIN_HEIGHT = 1.45  # the joined digit is at most this many times the taller piece ...
JOIN_TOUCH = 0.1  # ... unless the gap is this small (a faint stroke broke a digit in two)
JOIN_SMALL = 0.25  # a piece shorter than this fraction of the other joins it only across such a small gap
FRAGMENT_HEIGHT = 0.6  # a piece this much shorter than its neighbour is no digit on its own ...
FRAGMENT_AREA = 0.02  # ... with less ink than it, but not less than this fraction (a speck) ...
FRAGMENT_DISTANCE = 0.3  # ... and goes to it if this near (in its heights) by its upper half
FRAGMENT_ASPECT = 1.3  # ... keeping the digit at most this many heights wide

# MNIST's form, measured on its test set.
FIELD, BOX = 28, 20  # the digit fits a 20x20 box in a 28x28 field
CENTRE = 14.0  # centre of mass, in pixel indices
STROKE_PIXEL = 0.35  # pixels this bright (of the brightest) are strokes; half of them are saturated
STROKE_RATIO = 0.092  # median stroke width / longer side of the digit
STROKE_RANGE = (0.055, 0.18)  # widths outside these ratios are brought to the median
CROP_MAX_SIDE = 160  # digits are reshaped at no more than 8x their MNIST size


class ImageError(UsageError):
    """One picture cannot be read; the message says why, in one line."""


@dataclass(frozen=True)
class Picture:
    pixels: np.ndarray  # (H, W) grey or (H, W, 3) RGB, uint8, upright, transparency on white
    notes: tuple[str, ...] = ()  # things the reader should be told, e.g. only one frame of an animation read


@dataclass(frozen=True)
class Crop:
    image: np.ndarray  # (28, 28) uint8 in MNIST's form: white ink on black, centred by mass
    box: tuple[int, int, int, int]  # (x, y, w, h) in the pixels of the picture it came from
    line: int  # line of writing it belongs to, 0 at the top


# ---------------------------------------------------------------------------------------------------
# Decoding


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


# ---------------------------------------------------------------------------------------------------
# Finding the ink


@dataclass(frozen=True)
class Ink:
    strength: np.ndarray  # (H, W) float32: ink's departure from the paper, as a fraction of the paper's brightness
    threshold: float  # weakest strength that is ink rather than noise
    level: float  # typical strength of the strokes (0 when there are none)
    dark_on_light: bool  # dark ink on light paper (else light ink on a dark board)


def find_ink(gray: np.ndarray) -> Ink:
    """How strongly each pixel is ink, whatever the polarity and lighting.

    The paper's brightness is estimated at low resolution with filters wider than any stroke; the
    ink is then measured against it as a ratio, which cancels uneven lighting.

    >>> find_ink(to_gray(load_image("board.jpg").pixels)).dark_on_light
    False
    """
    h, w = gray.shape
    f = min(1.0, BG_SMALL_SIDE / min(h, w))
    small = cv2.resize(gray, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    step = max(1, max(h, w) // 300)  # polarity and noise are judged on every step-th pixel
    grid = gray[::step, ::step].astype(np.float32)
    median = cv2.medianBlur(small, BG_WINDOW).astype(np.float32)
    dark = _dark_on_light(grid - _upscale(median, *grid.shape[::-1]))
    paper, edges = _paper(small, median, dark)
    # Ink over paper as a ratio: both are lit by the same light, so uneven lighting cancels.
    paper = _upscale(paper, w, h)
    strength = (paper - gray) if dark else (gray - paper)
    strength /= np.maximum(paper, PAPER_FLOOR)
    if edges.any():
        strength[_upscale(edges, w, h) > 0] = 0
    sample = strength[::step, ::step]
    centre = float(np.median(sample))
    strength -= centre
    noise = 1.4826 * float(np.median(np.abs(sample - centre)))
    threshold = max(NOISE_SIGMAS * noise, MIN_CONTRAST)
    inked = sample[sample > threshold]
    if inked.size < 100:  # thin strokes can slip between the sampled pixels
        inked = strength[strength > threshold]
    level = float(np.percentile(inked, 75)) if inked.size else 0.0
    return Ink(strength, threshold, level, dark)


def _paper(small: np.ndarray, median: np.ndarray, dark: bool) -> tuple[np.ndarray, np.ndarray]:
    """The paper's brightness in a small copy of the picture, and where it has an edge (no ink read there).

    The median of a wide window is the paper wherever ink covers less than half of it, and it keeps
    the edges of a page on a desk. Inside a thick stroke or a filled loop the ink wins the vote. A
    closing (an opening on a board) wipes out anything narrower than the window, so where it disagrees
    with the median, clear of the picture's border, the median is inside ink: there the paper is
    filled in from around. (Along the border the closing is wrong instead: it cannot see past it, and
    it fills in a strip of desk beside a page.)
    """
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (BG_WINDOW, BG_WINDOW))
    closed = cv2.morphologyEx(small, cv2.MORPH_CLOSE if dark else cv2.MORPH_OPEN, kernel,
                              borderType=cv2.BORDER_REPLICATE).astype(np.float32)
    # Disagreements that matter: beyond the noise (a closing of noise is biased by a few deviations)
    # and a good part of the ink's contrast (a median inside ink jumps most of the way to the ink).
    away = small - median
    noise = 1.4826 * float(np.median(np.abs(away))) + 1
    contrast = float(np.percentile(-away if dark else away, 99.5))
    pulled = np.abs(closed - median) > np.maximum(BLOB_FILL * np.maximum(closed, PAPER_FLOOR),
                                                  max(NOISE_SIGMAS * noise, BLOB_FILL * contrast))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(pulled.astype(np.uint8), connectivity=8)
    x, y, bw, bh = stats[:, 0], stats[:, 1], stats[:, 2], stats[:, 3]
    inside = (x > 0) & (y > 0) & (x + bw < small.shape[1]) & (y + bh < small.shape[0])
    inside[0] = False
    paper = median.astype(np.uint8)
    if inside.any():
        holes = cv2.dilate(inside[labels].astype(np.uint8), np.ones((5, 5), np.uint8))  # with the rim
        paper = cv2.inpaint(paper, holes, 3, cv2.INPAINT_TELEA)
    paper = paper.astype(np.float32)
    # A sharp step in the paper's brightness, as large as the ink's contrast, is the edge of an object
    # (a page on a desk), not light.
    grad = cv2.morphologyEx(paper, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
    step = np.maximum(EDGE_STEP * np.maximum(paper, PAPER_FLOOR), max(NOISE_SIGMAS * noise, EDGE_STEP * 2 * contrast))
    edges = cv2.dilate((grad > step).astype(np.uint8), np.ones((3, 3), np.uint8))
    return paper, edges


def _upscale(small: np.ndarray, w: int, h: int) -> np.ndarray:
    return cv2.resize(small.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)


def _dark_on_light(diff: np.ndarray) -> bool:
    """Ink is the minority that departs far from the local paper: see which side departs more."""
    t = NOISE_SIGMAS * (1.4826 * float(np.median(np.abs(diff))) + 1)
    return bool(np.clip(-diff - t, 0, None).sum() >= np.clip(diff - t, 0, None).sum())


# ---------------------------------------------------------------------------------------------------
# Pieces of ink -> digits


@dataclass
class _Blob:
    x0: int
    y0: int
    x1: int  # exclusive
    y1: int  # exclusive
    area: int  # ink pixels
    ids: list[int]  # connected-component labels it is made of

    @property
    def w(self) -> int:
        return self.x1 - self.x0

    @property
    def h(self) -> int:
        return self.y1 - self.y0

    def absorb(self, other: "_Blob") -> None:
        self.x0, self.y0 = min(self.x0, other.x0), min(self.y0, other.y0)
        self.x1, self.y1 = max(self.x1, other.x1), max(self.y1, other.y1)
        self.area += other.area
        self.ids += other.ids


def _pieces(mask: np.ndarray) -> tuple[np.ndarray, list[_Blob]]:
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    blobs = [_Blob(x, y, x + w, y + h, a, [i]) for i, (x, y, w, h, a) in enumerate(stats) if i]
    if blobs:
        largest = max(b.area for b in blobs)
        blobs = [b for b in blobs if b.area >= max(3, SPECK_AREA * largest)]
    return labels, blobs


def _same_digit(a: _Blob, b: _Blob) -> bool:
    """Pieces of one digit sit one above the other or one inside the other; neighbours side by side."""
    overlap_x = min(a.x1, b.x1) - max(a.x0, b.x0)
    if overlap_x < JOIN_OVERLAP * min(a.w, b.w):
        return False
    taller = max(a.h, b.h)
    gap = max(a.y0, b.y0) - min(a.y1, b.y1)
    joined = max(a.y1, b.y1) - min(a.y0, b.y0)
    if gap <= JOIN_TOUCH * taller:
        return True
    # A speck between two lines of writing must not bridge them.
    return min(a.h, b.h) >= JOIN_SMALL * taller and gap <= JOIN_GAP * taller and joined <= JOIN_HEIGHT * taller


def _fragment_of(f: _Blob, d: _Blob) -> float | None:
    """How far the small piece f is from d, if it may be a detached part of d's top (a 5's bar)."""
    if (f.h >= FRAGMENT_HEIGHT * d.h or not FRAGMENT_AREA * d.area <= f.area < d.area
            or f.y0 + f.y1 >= d.y0 + d.y1):
        return None
    w, h = max(f.x1, d.x1) - min(f.x0, d.x0), max(f.y1, d.y1) - min(f.y0, d.y0)
    distance = max(f.x0 - d.x1, d.x0 - f.x1, f.y0 - d.y1, d.y0 - f.y1, 0)
    if distance > FRAGMENT_DISTANCE * d.h or w > FRAGMENT_ASPECT * h or h > JOIN_HEIGHT * d.h:
        return None
    return distance


def _join(blobs: list[_Blob]) -> list[_Blob]:
    """Join the pieces of each digit: stacked or nested pieces first, then fragments to their nearest digit."""
    blobs = sorted(blobs, key=lambda b: -b.area)
    joined = True
    while joined:
        joined = False
        for i, a in enumerate(blobs):
            for j in range(len(blobs) - 1, i, -1):
                if _same_digit(a, blobs[j]):
                    a.absorb(blobs.pop(j))
                    joined = True
    for f in sorted(blobs, key=lambda b: b.area):
        near = [(dist, i) for i, d in enumerate(blobs) if (dist := _fragment_of(f, d)) is not None]
        if near:
            blobs[min(near)[1]].absorb(f)
            blobs.remove(f)
    return blobs


def _lines(blobs: list[_Blob]) -> list[list[_Blob]]:
    """Group into lines of writing (top to bottom), each left to right."""
    lines: list[tuple[list[int], list[_Blob]]] = []  # ([top, bottom], members)
    for b in sorted(blobs, key=lambda b: (b.y0 + b.y1) / 2):
        best, best_share = None, 0.5
        for span, members in lines:
            # Overlap as a share of the shorter: a flat digit sits inside the band of a tall one.
            share = (min(span[1], b.y1) - max(span[0], b.y0)) / min(b.h, span[1] - span[0])
            if share >= best_share:
                best, best_share = (span, members), share
        if best is None:
            lines.append(([b.y0, b.y1], [b]))
        else:
            span, members = best
            span[0], span[1] = min(span[0], b.y0), max(span[1], b.y1)
            members.append(b)
    lines.sort(key=lambda line: np.mean([(b.y0 + b.y1) / 2 for b in line[1]]))
    return [sorted(members, key=lambda b: (b.x0 + b.x1) / 2) for _, members in lines]


def _erase_rules(strength: np.ndarray, cut: float) -> None:
    """Erase ruled lines from the ink above `cut` (in place), keeping the strokes that cross them.

    A rule is long, thin and nearly straight: runs of ink along one axis that together span most of
    the picture. On the rule, a pixel keeps only as much ink as there is on both sides of the rule
    (a stroke crossing it) or ink thicker than the rule (a stroke lying along it). A stroke as thin as
    the rule that lies along it is lost where it lies on it.
    """
    for axis in (1, 0):  # horizontal rules run along x (axis 1), vertical ones along y (axis 0)
        mask = (strength > cut).astype(np.uint8)
        side, other = mask.shape[axis], mask.shape[1 - axis]
        run = max(9, int(RULE_RUN * side))
        kernel = np.ones((1, run) if axis == 1 else (run, 1), np.uint8)
        runs = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)
        if not runs.any():
            continue
        # The runs of a slightly tilted rule touch corner to corner; a dilation bridges breaks where the
        # rule is faint or passes under a digit. Labelling a pooled copy is enough to group them.
        k = RULE_POOL
        h, w = runs.shape
        pooled = cv2.dilate(runs, np.ones((k, k), np.uint8), anchor=(0, 0))[::k, ::k]  # any ink in each k x k block
        bridge = np.ones((1, 3 * run // k) if axis == 1 else (3 * run // k, 1), np.uint8)
        n, lab, stats, _ = cv2.connectedComponentsWithStats(cv2.dilate(pooled, bridge), connectivity=8)

        def full(small: np.ndarray) -> np.ndarray:  # a pooled region back at full size
            return np.repeat(np.repeat(small, k, axis=0), k, axis=1)

        stats = stats * k
        rule = np.zeros(n, bool)
        thickness = 0.0
        span = max(RULE_SPAN * side / 2, RULE_MIN_LENGTH)
        for i in np.flatnonzero(stats[:, 2 if axis == 1 else 3] >= span)[1:]:
            x, y, bw, bh = stats[i, :4]
            # A tilted rule leaves the picture through a side: then half the span will do.
            out = x == 0 or y == 0 or x + bw >= w or y + bh >= h
            need = span if out else max(RULE_SPAN * side, RULE_MIN_LENGTH)
            region = runs[y:y + bh, x:x + bw] > 0
            inside = full(lab[y // k:(y + bh) // k, x // k:(x + bw) // k] == i)[:region.shape[0], :region.shape[1]] & region
            if axis == 0:
                inside = inside.T
            # Thickness at each point along: ink across, shared among the rules there (digits can link several).
            crossings = (inside[1:] & ~inside[:-1]).sum(axis=0) + inside[0]
            along = np.flatnonzero(crossings)
            if along[-1] - along[0] + 1 < need:  # only the bridges made it long
                continue
            across = inside.sum(axis=0) / np.maximum(crossings, 1)
            t = float(np.percentile(across[along], 20))  # strokes on a rule do not count
            if t <= max(4.0, RULE_THICKNESS * other):
                rule[i], thickness = True, max(thickness, t)
        if not rule.any():
            continue
        on_rule = cv2.dilate((full(rule[lab])[:h, :w] & (runs > 0)).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        t = int(np.ceil(thickness)) + 2  # from the middle of the rule to clear of it
        # Ink thicker across than the rule is a stroke lying along it: that stays.
        thick = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((t + 1, 1) if axis == 1 else (1, t + 1), np.uint8))
        on_rule &= thick == 0
        pad = ((t, t), (0, 0)) if axis == 1 else ((0, 0), (t, t))
        padded = np.pad(strength, pad, mode="edge")
        if axis == 1:
            both_sides = np.minimum(padded[:-2 * t], padded[2 * t:])  # ink t rows above and t rows below
        else:
            both_sides = np.minimum(padded[:, :-2 * t], padded[:, 2 * t:])
        strength[on_rule] = np.minimum(strength[on_rule], both_sides[on_rule])


def _digit_like(b: _Blob, ink: Ink, labels: np.ndarray) -> bool:
    if b.h < MIN_DIGIT_PX or b.w > MAX_ASPECT * b.h:
        return False
    if b.w >= b.h / 2 and b.area > BLOB_DENSITY * b.w * b.h:
        return False
    own = np.isin(labels[b.y0:b.y1, b.x0:b.x1], b.ids)
    return float(np.percentile(ink.strength[b.y0:b.y1, b.x0:b.x1][own], 90)) >= MIN_STRENGTH * ink.threshold


def extract_digits(pixels: np.ndarray) -> list[Crop]:
    """Every digit in a picture, in reading order, as a 28x28 MNIST-style crop with its box.

    No ink, or nothing digit-like (specks, lines, blots), gives an empty list.

    >>> [c.line for c in extract_digits(load_image("two-lines.png").pixels)]
    [0, 0, 1, 1]
    """
    gray = to_gray(pixels)
    h, w = gray.shape
    scale = min(1.0, WORK_MAX_SIDE / max(h, w))
    if scale < 1:
        gray = cv2.resize(gray, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    ink = find_ink(gray)
    if ink.level == 0:
        return []
    cut = max(ink.threshold, MASK_LEVEL * ink.level)
    _erase_rules(ink.strength, cut)
    mask = (ink.strength > cut).astype(np.uint8)
    labels, blobs = _pieces(mask)
    blobs = [b for b in _join(blobs) if _digit_like(b, ink, labels)]
    if not blobs:
        return []
    tallest = max(b.h for b in blobs)
    crops = []
    for n, line in enumerate(_lines(blobs)):
        line_tallest = max(b.h for b in line)
        for b in line:
            if b.h < MIN_HEIGHT_RATIO * line_tallest or b.h < MIN_GLOBAL_HEIGHT_RATIO * tallest:
                continue
            box = (round(b.x0 / scale), round(b.y0 / scale), max(1, round(b.w / scale)), max(1, round(b.h / scale)))
            crops.append(Crop(_mnist_form(ink, labels, b), box, n))
    # Renumber lines that lost all their members to the height rules.
    renumber = {old: new for new, old in enumerate(sorted({c.line for c in crops}))}
    return [Crop(c.image, c.box, renumber[c.line]) for c in crops]


# ---------------------------------------------------------------------------------------------------
# One digit -> MNIST's form


def _mnist_form(ink: Ink, labels: np.ndarray, b: _Blob) -> np.ndarray:
    """Soft ink of one digit (its own pieces only) -> 28x28 uint8 like an MNIST digit."""
    pad = max(2, round(0.1 * max(b.w, b.h)))
    H, W = labels.shape
    x0, y0, x1, y1 = max(0, b.x0 - pad), max(0, b.y0 - pad), min(W, b.x1 + pad), min(H, b.y1 + pad)
    lab = labels[y0:y1, x0:x1]
    own = np.isin(lab, b.ids)
    # The faint edges below the stroke threshold belong to the digit too, but not its neighbours' ink.
    near = cv2.dilate(own.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * pad + 1,) * 2)) > 0
    keep = near & ((lab == 0) | own)
    strength = ink.strength[y0:y1, x0:x1]
    level = max(float(np.median(strength[own])), 2 * ink.threshold)
    soft = np.clip((strength - ink.threshold) / (level - ink.threshold), 0, 1) * keep
    return to_mnist(soft)


def to_mnist(soft: np.ndarray) -> np.ndarray:
    """One digit's ink (float, 0 background to 1 full stroke, any size) -> 28x28 uint8 in MNIST's form.

    Tight crop, stroke width brought into MNIST's range, fitted into 20x20 keeping the aspect ratio with
    anti-aliasing, then placed so that its centre of mass is at the centre of the 28x28 field.

    >>> stroke = np.zeros((200, 120), np.float32); stroke[10:190, 55:65] = 1   # a "1"
    >>> to_mnist(stroke).shape
    (28, 28)
    """
    soft = _tight(np.asarray(soft, np.float32))
    if soft.size == 0:
        return np.zeros((FIELD, FIELD), np.uint8)
    longest = max(soft.shape)
    if longest > CROP_MAX_SIDE:
        f = CROP_MAX_SIDE / longest
        soft = cv2.resize(soft, (max(1, round(soft.shape[1] * f)), max(1, round(soft.shape[0] * f))),
                          interpolation=cv2.INTER_AREA)
    soft = _tight(_mnist_stroke(soft))
    h, w = soft.shape
    f = BOX / max(h, w)
    size = (max(1, round(w * f)), max(1, round(h * f)))
    fitted = cv2.resize(soft, size, interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)
    # Half of MNIST's stroke pixels are saturated; give the strokes the same grey levels.
    strokes = fitted[fitted > STROKE_PIXEL * fitted.max()]
    fitted = np.clip(fitted / max(float(np.median(strokes)), 1e-6) * 255 + 0.5, 0, 255).astype(np.uint8)
    out = np.zeros((FIELD, FIELD), np.uint8)
    total = float(fitted.sum())
    if total == 0:
        return out
    ys, xs = np.indices(fitted.shape)
    cy, cx = (ys * fitted).sum() / total, (xs * fitted).sum() / total
    top, left = round(CENTRE - cy), round(CENTRE - cx)
    # Paste with clipping: an off-centre mass may push part of the box outside, as in MNIST.
    sy0, sx0 = max(0, -top), max(0, -left)
    dy0, dx0 = max(0, top), max(0, left)
    hh = min(fitted.shape[0] - sy0, FIELD - dy0)
    ww = min(fitted.shape[1] - sx0, FIELD - dx0)
    out[dy0:dy0 + hh, dx0:dx0 + ww] = fitted[sy0:sy0 + hh, sx0:sx0 + ww]
    return out


def _tight(soft: np.ndarray, eps: float = 0.05) -> np.ndarray:
    ys, xs = np.nonzero(soft > eps)
    if not len(ys):
        return soft[:0, :0]
    return soft[ys.min():ys.max() + 1, xs.min():xs.max() + 1]


def stroke_width(soft: np.ndarray) -> float:
    """Typical stroke width in pixels: twice the inked area over its outline (exact for long strokes)."""
    mask = (soft > 0.5).astype(np.uint8)
    area = int(mask.sum())
    if not area:
        return 0.0
    edge = area - int(cv2.erode(mask, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0).sum())
    return 2 * area / max(edge, 1)


def _mnist_stroke(soft: np.ndarray) -> np.ndarray:
    """Thicken a hairline or thin a marker stroke to MNIST's median width, relative to the digit's size."""
    longest = max(soft.shape)
    width = stroke_width(soft)
    ratio = width / longest
    if STROKE_RANGE[0] <= ratio <= STROKE_RANGE[1] or width == 0:
        return soft
    # Growing every stroke by d pixels also grows the digit by d: solve (width + d) / (longest + d) = target.
    d = (STROKE_RATIO * longest - width) / (1 - STROKE_RATIO)
    k = int(round(abs(d)))
    if k < 1:
        return soft
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k + 1, k + 1))
    if d > 0:
        soft = cv2.copyMakeBorder(soft, k, k, k, k, cv2.BORDER_CONSTANT, value=0)
        return cv2.dilate(soft, kernel)
    return cv2.erode(soft, kernel)
