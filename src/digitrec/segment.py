"""Pieces of ink -> digits: connected pieces, the pieces of one digit joined, marks that are not digits
dropped, lines of writing in reading order, and each digit cut out of the picture with its soft edges.

    >>> from digitrec.images import load_image
    >>> from digitrec.segment import extract_digits
    >>> crops = extract_digits(load_image("photo.jpg").pixels)      # in reading order
    >>> [(c.box, c.line) for c in crops]            # (x, y, w, h) in the photo's pixels
    [((112, 80, 61, 98), 0), ((190, 76, 70, 103), 0)]
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from digitrec.images import to_gray
from digitrec.ink import MASK_LEVEL, WORK_MAX_SIDE, Ink, _erase_rules, find_ink
from digitrec.shape import to_mnist

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


@dataclass(frozen=True)
class Crop:
    image: np.ndarray  # (28, 28) uint8 in MNIST's form: white ink on black, centred by mass
    box: tuple[int, int, int, int]  # (x, y, w, h) in the pixels of the picture it came from
    line: int  # line of writing it belongs to, 0 at the top


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
