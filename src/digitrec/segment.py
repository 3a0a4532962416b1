"""Pieces of ink -> digits: connected pieces, the pieces of one digit joined, marks that are not digits
dropped, lines of writing in reading order, and each digit cut out of the picture with its soft edges.

    >>> from digitrec.images import load_image
    >>> from digitrec.segment import extract_digits
    >>> crops = extract_digits(load_image("photo.jpg").pixels)      # in reading order
    >>> [(c.box, c.line) for c in crops]            # (x, y, w, h) in the photo's pixels
    [((112, 80, 61, 98), 0), ((190, 76, 70, 103), 0)]
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import cv2
import numpy as np

from digitrec import strings
from digitrec.images import to_gray
from digitrec.ink import INK_SCALE, MASK_LEVEL, WORK_MAX_SIDE, Ink, _erase_rules, find_ink
from digitrec.shape import stroke_width, to_mnist

Score = Callable[[np.ndarray], np.ndarray]  # uint8 digits (N, 28, 28) -> probabilities (N, 10)

# Telling digits from other marks (sizes in pixels of the searched picture).
SPECK_AREA = 0.004  # pieces smaller than this fraction of the largest piece are specks ...
SPECK_PX = 3  # ... and so are pieces of fewer pixels
MAX_PIECES = 300  # no page holds more digits' pieces than this: beyond it, the smallest are noise
MIN_DIGIT_PX = 8  # digits shorter than this cannot be read (measured before the ink averaging widens them)
SPECKS_PX = 30  # marks shorter than this are checked for a stroke in the unaveraged ink (dust has none)
MIN_HEIGHT_RATIO = 0.4  # a digit is at least this fraction of the tallest one in its line ...
MIN_GLOBAL_HEIGHT_RATIO = 0.2  # ... and of the tallest one in the picture
SEPARATOR_HEIGHT = 0.6  # a mark less than this fraction of the line's tallest, wholly below its middle, is a comma or a dot
MAX_ASPECT = 3.0  # wider than this many heights: a line, a dash or touching digits, not one digit
DASH_STROKES = 2.5  # a wide piece at most this many stroke widths high is a line or a dash
BLOB_DENSITY = 0.9  # a wide box filled more than this is a blot, not a digit (a bold 8 fills 0.8)
FAINT_PEN = 0.2  # the threshold above this share of the strokes' typical strength: a faint pen over print, where ...
HYSTERESIS = 0.6  # ... strokes go on through ink this fraction of the threshold ...
GROW_STEPS = 3  # ... at most this many pixels from ink above it
FAINT_SHARE = 0.3  # a piece whose ink is fainter than this share of the boldest piece's is no digit (medians)
MIN_STRENGTH = 1.5  # a digit's ink is at least this many times the ink threshold
EDGE_THIN = 0.2  # a piece along a side of the picture at most this many heights wide ...
EDGE_SPAN = 0.8  # ... and at least this share of the picture high is the page's edge, when other ink is there
EDGE_SMALL = 0.6  # a mark alone in its line, cut by the picture's edge and shorter than this share of the tallest digit, is no digit

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
JOIN_LINE = 2.0  # a flat piece wider than this many heights of the other is a rule under them, not its part

# Splitting a piece that holds several touching digits: cuts are the cheapest paths from top to bottom
# through the ink, and the classifier chooses the cuts that read best.
SPLIT_WIDTH = 1.0  # pieces wider than this many heights may hold several digits
PART_MIN = 0.15  # a digit cut from a piece is at least this many heights wide (a 1) ...
PART_MAX = 1.25  # ... and at most this many ...
PART_HEIGHT = 0.5  # ... and at least this share of the piece's height (digits that touch are of a size)
CUT_DRIFT = 1.0  # a cut's path pays this much (in ink pixels) for each step sideways
CUT_MAX_INK = 3.0  # a cut crosses at most this many stroke widths of ink
CUT_SPACING = 0.12  # cuts closer than this many heights are the same cut
MAX_CUTS = 10  # the cheapest cuts kept per piece
PARTS_PER_DIGIT = 3  # a digit spans at most this many cut intervals
PART_BONUS = 0.3  # log-probability each digit adds: without it one digit always reads better than two
CUT_PENALTY = 0.2  # log-probability a cut costs per stroke width of ink it crosses
SURE_WHOLE = 0.95  # a piece less than SURE_SPLIT heights wide read whole this surely is one digit ...
SURE_SPLIT = 1.4  # ... (wider ones are always tried in parts)
REMNANT = 0.12  # ink of a cut part smaller than this share of it is the neighbour's, left out
STRING_MIN_WIDTH = 0.7  # pieces at least this many heights wide are offered to the string model too (a bold 1 is 0.65) ...
STRING_SURE = 0.9  # ... which reads one narrower than SPLIT_WIDTH only if each of its 2+ digits is this sure
PIECE_MARGIN = 3.0  # a piece the classifier is surer of whole still parts where the string model finds its digits this much likelier (log-probability) than any one digit
LINE_MARGIN = 3.0  # a line is read whole by the string model when its reading is this much likelier there (log-probability)
LINE_EVEN = 1.6  # ... and when none of its pieces is more than this many times as tall as their median
TOP_BAND = 0.2  # a piece narrower than SPLIT_WIDTH read as two 1s whose ink in this top share of its height ...
TOP_NARROW = 0.6  # ... spans at most this share of its width is one 1 with a long up-stroke (strokes meeting at the top)
INK_SPAN = 0.05  # soft ink above this is a digit's when its box is measured without its strokes


@dataclass(frozen=True)
class Crop:
    image: np.ndarray  # (28, 28) uint8 in MNIST's form: white ink on black, centred by mass
    box: tuple[int, int, int, int]  # (x, y, w, h) in the pixels of the picture it came from
    line: int  # line of writing it belongs to, 0 at the top
    string_probs: np.ndarray | None = None  # (10,) what the string model read there, for digits cut from a string


@dataclass(frozen=True)
class Rejected:
    box: tuple[int, int, int, int]  # (x, y, w, h) in the pixels of the picture it came from
    reason: str  # why it is not a digit, in a few words: "line or dash", "too small", ...


@dataclass(frozen=True)
class Found:
    crops: list[Crop]  # the digits, in reading order
    rejected: list[Rejected] = field(default_factory=list)  # marks found that are not digits


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
        blobs = [b for b in blobs if b.area >= max(SPECK_PX, SPECK_AREA * largest)]
        blobs = sorted(blobs, key=lambda b: -b.area)[:MAX_PIECES]
    return labels, blobs


def _same_digit(a: _Blob, b: _Blob) -> bool:
    """Pieces of one digit sit one above the other or one inside the other; neighbours side by side."""
    flat, other = (a, b) if a.w * b.h > b.w * a.h else (b, a)
    if flat.w > MAX_ASPECT * flat.h and flat.w > JOIN_LINE * other.h:
        return False
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


def _not_digit(b: _Blob, ink: Ink, labels: np.ndarray, split: bool, alone: bool) -> str | None:
    """Why a piece of ink is not a digit (or digits, when they may be split), or None if it may be one."""
    if b.h < MIN_DIGIT_PX + INK_SCALE - 1:
        return "too small"
    H, W = labels.shape
    if (not alone and (b.x0 == 0 or b.x1 == W) and b.w <= EDGE_THIN * b.h and b.h >= EDGE_SPAN * H):
        return "edge of the page"
    own = np.isin(labels[b.y0:b.y1, b.x0:b.x1], b.ids)
    if b.w > MAX_ASPECT * b.h:
        # Touching digits make a wide piece too, but they stand many stroke widths high.
        if not split or b.h <= DASH_STROKES * stroke_width(own.astype(np.float32)):
            return "line or dash"
    if b.w >= b.h / 2 and b.area > BLOB_DENSITY * b.w * b.h:
        return "blot"
    if float(np.percentile(ink.strength[b.y0:b.y1, b.x0:b.x1][own], 90)) < MIN_STRENGTH * ink.threshold:
        return "too faint"
    return None


def extract_digits(pixels: np.ndarray, score: Score | None = None) -> list[Crop]:
    """Every digit in a picture, in reading order, as a 28x28 MNIST-style crop with its box.

    No ink, or nothing digit-like (specks, lines, blots), gives an empty list. With `score` (a
    classifier), pieces of ink that hold several touching digits are split where the parts read best.

    >>> [c.line for c in extract_digits(load_image("two-lines.png").pixels)]
    [0, 0, 1, 1]
    """
    return find_digits(pixels, score).crops


def find_digits(pixels: np.ndarray, score: Score | None = None, string_model: bool = True,
                not_digit: Callable[[np.ndarray], np.ndarray] | None = None) -> Found:
    """As extract_digits, and also the marks found that are not digits, with their boxes and why.

    With a classifier, the bundled string model (unless string_model is False) reads touching digits
    and the lines it reads much better whole; `not_digit` (28x28 crops -> bools) names the marks
    kept out of a line read whole. They are still among the crops, for the caller to leave out."""
    gray = to_gray(pixels)
    h, w = gray.shape
    scale = min(1.0, WORK_MAX_SIDE / max(h, w))
    if scale < 1:
        gray = cv2.resize(gray, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)

    def to_picture(x0: int, y0: int, x1: int, y1: int) -> tuple[int, int, int, int]:
        return (round(x0 / scale), round(y0 / scale), max(1, round((x1 - x0) / scale)), max(1, round((y1 - y0) / scale)))

    ink = find_ink(gray)
    if ink.level == 0:
        return Found([])
    use_strings = score is not None and string_model and strings.available()
    cut = max(ink.threshold, MASK_LEVEL * ink.level)
    _erase_rules(ink.strength, cut)
    # Hysteresis: ink that stands out clearly starts a stroke, which goes on through fainter ink beside
    # it. On a printed background the threshold sits high above the paper's texture, close to a faint
    # pen's strength, and its strokes break up under it; the texture alone never starts a stroke. On
    # clean paper the strokes stand far above the threshold, and growing them would only fatten them.
    mask = (ink.strength > cut).astype(np.uint8)
    if ink.threshold > FAINT_PEN * ink.level:
        fainter = (ink.strength > HYSTERESIS * cut).astype(np.uint8)
        for _ in range(GROW_STEPS):
            mask = cv2.dilate(mask, np.ones((3, 3), np.uint8)) & fainter
        ink = replace(ink, threshold=HYSTERESIS * ink.threshold)  # a stroke's ink, from its faintest part on
    labels, blobs = _pieces(mask)
    blobs = _join(blobs)
    rejected, kept = [], []
    for b in blobs:
        reason = _not_digit(b, ink, labels, score is not None, len(blobs) == 1)
        if reason is None:
            kept.append(b)
        elif reason != "too small":
            rejected.append(Rejected(to_picture(b.x0, b.y0, b.x1, b.y1), reason))
    if not kept:
        return Found([], rejected)
    # One pen wrote the digits of a picture: a piece far fainter than the boldest one is the paper's
    # grain or a shadow's edge that the faint-ink threshold let through.
    strength = [float(np.median(ink.strength[b.y0:b.y1, b.x0:b.x1][np.isin(labels[b.y0:b.y1, b.x0:b.x1], b.ids)]))
                for b in kept]
    boldest = max(strength)
    for b, st in zip(kept, strength):
        if st < FAINT_SHARE * boldest:
            rejected.append(Rejected(to_picture(b.x0, b.y0, b.x1, b.y1), "much fainter than the other ink"))
    kept = [b for b, st in zip(kept, strength) if st >= FAINT_SHARE * boldest]
    tallest = max(b.h for b in kept)
    crops = []
    lines = _lines(kept)
    H, W = labels.shape
    for n, line in enumerate(lines):
        b = line[0]
        # A mark alone in a line of its own, cut by the picture's edge and smaller than the digits:
        # a shadow, the page's edge or the end of a line the photo cuts.
        if (len(line) == 1 and len(lines) > 1 and b.h < EDGE_SMALL * tallest
                and (b.x0 == 0 or b.y0 == 0 or b.x1 == W or b.y1 == H)):
            rejected.append(Rejected(to_picture(b.x0, b.y0, b.x1, b.y1), "cut by the picture's edge"))
            line.clear()
    for n, line in enumerate(line for line in lines if line):
        first = len(crops)
        whole = _LineInk(line)
        # The height of the line's digits: the second tallest piece's, where there are three or more, so
        # that one digit with a long stem (a 4, a 9 that runs far down) does not make the others look
        # like commas and dots beside it.
        heights = sorted((b.h for b in line), reverse=True)
        line_tallest = heights[1] if len(heights) >= 3 else heights[0]
        # The band the line's digits fill: a comma or a dot sits below its middle, no digit does.
        big = [b for b in line if b.h >= SEPARATOR_HEIGHT * line_tallest]
        middle = (np.median([b.y0 for b in big]) + np.median([b.y1 for b in big])) / 2
        for b in line:
            if b.h < MIN_HEIGHT_RATIO * line_tallest or b.h < MIN_GLOBAL_HEIGHT_RATIO * tallest:
                rejected.append(Rejected(to_picture(b.x0, b.y0, b.x1, b.y1), "smaller than the digits beside it"))
                continue
            if b.h < SEPARATOR_HEIGHT * line_tallest and b.y0 > middle:
                rejected.append(Rejected(to_picture(b.x0, b.y0, b.x1, b.y1), "comma or dot"))
                continue
            soft, (ox, oy), own = _soft_ink(ink, labels, b)
            if (b.h < SPECKS_PX and ink.sharp is not None
                    and _part_form(_soft_ink(replace(ink, strength=ink.sharp), labels, b)[0]) is None):
                # Averaging joins dust and dithering into a solid mark; unaveraged, it has no stroke.
                rejected.append(Rejected(to_picture(b.x0, b.y0, b.x1, b.y1), "specks, no stroke"))
                continue
            parts = None
            if use_strings and b.w > STRING_MIN_WIDTH * b.h:
                parts = _read_string(soft, own, b, score, not_digit)
            elif score is not None and b.w > SPLIT_WIDTH * b.h:
                parts = _split(soft, own, b, score)
            if parts is None:
                crops.append(Crop(to_mnist(soft), to_picture(b.x0, b.y0, b.x1, b.y1), n))
                whole.add(soft, ox, oy, own, len(crops) - 1)
            else:
                for image, (x0, y0, x1, y1), *probs in parts:
                    crops.append(Crop(image, to_picture(x0 + ox, y0 + oy, x1 + ox, y1 + oy), n, *probs))
                whole.add(soft, ox, oy, own)
        # A line of one piece is read as a piece is (a wide one by the string model, above): read whole,
        # a letter or a scribble would escape the digit-or-not check.
        # The string model learned from lines of digits of about one size: a line where one piece stands
        # far taller than the others is no such line, and it would read the small ones as nothing.
        tall = [soft.shape[0] for soft, *_ in whole.pieces]
        even = bool(tall) and max(tall) <= LINE_EVEN * float(np.median(tall))
        if use_strings and len(crops) > first and len(line) > 1 and even:
            marks = []  # letters and signs read one by one: left out of the line's ink
            single = [i for i in whole.single if crops[i].image.any()]
            if not_digit is not None and single:
                marks = [i for i, no in zip(single, not_digit(np.stack([crops[i].image for i in single]))) if no]
            whole.lay(leave_out=marks)
            digits = [c for i, c in enumerate(crops[first:], first) if i not in marks]
            instead = _read_line(whole, digits, score) if digits else None
            if instead is not None:  # the marks stay, for the digit-or-not check to list
                crops[first:] = ([Crop(image, to_picture(*box), n, probs) for image, box, probs in instead]
                                 + [crops[i] for i in marks])
    # Renumber lines that lost all their members to the height rules.
    renumber = {old: new for new, old in enumerate(sorted({c.line for c in crops}))}
    return Found([Crop(c.image, c.box, renumber[c.line], c.string_probs) for c in crops], rejected)


class _LineInk:
    """The soft ink of a line's digits laid side by side as they are in the picture: what the string
    model reads when it reads the line whole. Marks left out of the line are left out of it too."""

    def __init__(self, line: list[_Blob]):
        self.x0, self.y0 = min(b.x0 for b in line), min(b.y0 for b in line)
        x1, y1 = max(b.x1 for b in line), max(b.y1 for b in line)
        self.pad = max(2, round(0.1 * (y1 - self.y0)))
        self.shape = (y1 - self.y0 + 2 * self.pad, x1 - self.x0 + 2 * self.pad)
        self.soft = self.own = None  # made by lay, only for the lines read whole
        self.pieces = []  # (soft, ox, oy, own, the crop it is read as, if one)

    @property
    def single(self) -> list[int]:
        """The crops of pieces read as one digit each."""
        return [crop for *_, crop in self.pieces if crop is not None]

    def add(self, soft: np.ndarray, ox: int, oy: int, own: np.ndarray, crop: int | None = None) -> None:
        """A piece's soft ink (its region starting at column ox, row oy of the picture), and the crop it
        is read as when it is one digit."""
        self.pieces.append((soft, ox, oy, own, crop))

    def lay(self, leave_out=()) -> None:
        """Lay the pieces into the line, but those whose crop is in leave_out."""
        self.soft, self.own = np.zeros(self.shape, np.float32), np.zeros(self.shape, bool)
        for soft, ox, oy, own, crop in self.pieces:
            if crop is None or crop not in leave_out:
                self._lay(soft, ox, oy, own)

    def _lay(self, soft: np.ndarray, ox: int, oy: int, own: np.ndarray) -> None:
        y, x = oy - self.y0 + self.pad, ox - self.x0 + self.pad
        ys, xs = slice(max(0, y), y + soft.shape[0]), slice(max(0, x), x + soft.shape[1])
        into = self.soft[ys, xs]
        cut = (slice(max(0, -y), max(0, -y) + into.shape[0]), slice(max(0, -x), max(0, -x) + into.shape[1]))
        np.maximum(into, soft[cut], out=into)
        self.own[ys, xs] |= own[cut]

    def to_picture(self, x0: int, y0: int, x1: int, y1: int) -> tuple[int, int, int, int]:
        dx, dy = self.x0 - self.pad, self.y0 - self.pad
        return x0 + dx, y0 + dy, x1 + dx, y1 + dy


def _read_line(whole: _LineInk, crops: list[Crop], score: Score):
    """Read a line whole with the string model when that reading fits its ink much better than the
    digits found one by one do: [(28x28 image, (x0, y0, x1, y1) in the work picture, ten probabilities)],
    or None to keep the crops.

    Both readings are scored by the string model on the whole line, as the probability of their digit
    sequence (over every alignment): the classifier knows a digit better, the string model knows where
    digits are, how many, and what is no digit. The crops stand unless the line reads LINE_MARGIN
    (in log-probability) better the string model's way.
    """
    framed = strings.frames(whole.soft)
    probs = framed[0]
    best = [d for d, *_ in strings.greedy(probs)]
    single = [i for i, c in enumerate(crops) if c.string_probs is None]
    read = {i: int(p.argmax()) for i, p in zip(single, score(np.stack([crops[i].image for i in single])))} if single else {}
    found = [read[i] if i in read else int(c.string_probs.argmax()) for i, c in enumerate(crops)]
    if not best or best == found:
        return None
    if strings.sequence_logprob(probs, best) - strings.sequence_logprob(probs, found) <= LINE_MARGIN:
        return None
    where = strings.centres(whole.soft, framed)
    for soft, ox, oy, own, crop in whole.pieces:
        x0 = ox - whole.x0 + whole.pad
        if (crop is not None and soft.shape[1] <= SPLIT_WIDTH * soft.shape[0]
                and _two_ones(where, x0, x0 + soft.shape[1]) and _meet_at_top(own)):
            return None
    parts = _string_parts(whole.soft, whole.own, strings.read_spans(whole.soft, framed))
    return [(image, whole.to_picture(*box), p) for image, box, p in parts]


def _meet_at_top(own: np.ndarray) -> bool:
    """Whether a piece's strokes meet at its top: its ink there is one stroke, far narrower than the piece."""
    rows, cols = np.nonzero(own)
    if not len(rows):
        return False
    top = rows < rows.min() + TOP_BAND * (rows.max() + 1 - rows.min())
    return np.ptp(cols[top]) + 1 <= TOP_NARROW * (np.ptp(cols) + 1)


def _two_ones(centres, x0: int, x1: int) -> bool:
    """Whether the string model reads two or more 1s in columns x0..x1 (centres: strings.centres)."""
    return sum(d == 1 and x0 <= c < x1 for d, c in centres) >= 2


def _soft_ink(ink: Ink, labels: np.ndarray, b: _Blob) -> tuple[np.ndarray, tuple[int, int], np.ndarray]:
    """Soft ink of one piece (its own ink only, with its faint edges) around its box, where that region
    starts, and which of its pixels are the piece's own strokes."""
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
    return soft.astype(np.float32), (x0, y0), own


def _cuts(own: np.ndarray, height: int) -> list[tuple[np.ndarray, float]]:
    """The cheapest top-to-bottom paths through a piece's ink (one x per row), left to right.

    A path pays one for each ink pixel it crosses and CUT_DRIFT for each step sideways, so it runs
    down the gap between two digits, bending round their strokes, and crosses where they touch: the
    few pixels a drop falling between them would roll through.
    """
    cost = own.astype(np.float32)
    h, w = cost.shape
    inked = np.flatnonzero(own.any(axis=0))
    # A cut leaves at least a narrow digit on each side: it never goes round the piece.
    lo, hi = int(inked[0]) + round(PART_MIN * height), int(inked[-1]) + 1 - round(PART_MIN * height)
    if hi <= lo:
        return []
    big = np.float32(1e9)
    cost[:, :lo] = big
    cost[:, hi:] = big
    acc = cost[0].copy()
    moves = np.zeros((h, w), np.int8)
    for y in range(1, h):
        left = np.concatenate(([big], acc[:-1])) + CUT_DRIFT
        right = np.concatenate((acc[1:], [big])) + CUT_DRIFT
        stack = np.stack((left, acc, right))  # (3, w): came from x-1, x, x+1
        step = stack.argmin(axis=0)
        acc = stack[step, np.arange(w)] + cost[y]
        moves[y] = step.astype(np.int8) - 1
    width = stroke_width(own.astype(np.float32)) or 1.0
    paths, where = [], []
    for tried, x in enumerate(sorted(range(lo, hi), key=lambda x: acc[x])):
        if acc[x] > CUT_MAX_INK * width or len(paths) == MAX_CUTS or tried == 4 * MAX_CUTS:
            break
        path = np.empty(h, np.int32)
        path[-1] = x
        for y in range(h - 1, 0, -1):
            path[y - 1] = path[y] + moves[y, path[y]]
        # Paths that end apart often run together above: one cut.
        mean = float(path.mean())
        if all(abs(mean - m) >= CUT_SPACING * height for m in where):
            paths.append((path, float(acc[x]) / width))
            where.append(mean)
    order = np.argsort(where)
    paths = [paths[i] for i in order]
    return paths


def _part_form(soft: np.ndarray) -> np.ndarray | None:
    """A cut part in MNIST's form, or None when too little of it is left to read (a sliver of stroke)."""
    try:
        image = to_mnist(soft)
    except ZeroDivisionError:  # thinned to nothing inside to_mnist
        return None
    return image if image.any() else None


def _read_string(soft: np.ndarray, own: np.ndarray, b: _Blob, score: Score, not_digit=None):
    """Read a wide piece with the string model: [(28x28 image, (x0, y0, x1, y1), ten probabilities)] for
    each digit it holds, left to right, cut from the piece at the columns the model read it in; None
    when the piece reads best whole (then it is, as before).

    As for cuts, a piece less than SURE_SPLIT heights wide stays whole when the classifier is surer of
    it whole than the string model is of all its digits together (a wide 2 or a bold 1 must not become
    two digits), unless the string model itself finds its reading PIECE_MARGIN likelier than any one
    digit: the classifier, which never saw two digits in one field, is sure of overlapping ones too
    (a 9 over a 4 reads as a sure 4). One narrower than SPLIT_WIDTH parts only
    where the string model is sure of each digit, and never into two 1s whose strokes meet at the top.
    """
    framed = strings.frames(soft)
    spans = strings.read_spans(soft, framed)
    if len(spans) < 2:
        return None
    if b.w <= SPLIT_WIDTH * b.h and min(float(p.max()) for p, _, _ in spans) < STRING_SURE:
        return None
    if b.w <= SPLIT_WIDTH * b.h and _two_ones(strings.centres(soft, framed), 0, soft.shape[1]) and _meet_at_top(own):
        return None
    # Reading the piece whole must be less likely than the string model's reading of all its digits.
    whole = to_mnist(soft)[None]
    if b.w < SURE_SPLIT * b.h and float(score(whole)[0].max()) >= np.prod([p.max() for p, _, _ in spans]):
        # The string model may still find its digits far likelier than any one digit there, unless the
        # piece is a mark (a # is no 14): then it stays whole, for the digit-or-not check to leave out.
        probs = framed[0]
        one = max(strings.sequence_logprob(probs, [d]) for d in range(10))
        if strings.sequence_logprob(probs, [int(p.argmax()) for p, _, _ in spans]) - one <= PIECE_MARGIN:
            return None
        if not_digit is not None and bool(not_digit(whole)[0]):
            return None
    return _string_parts(soft, own, spans)


def _string_parts(soft: np.ndarray, own: np.ndarray, spans):
    """The digits the string model read at `spans` [(ten probabilities, x0, x1)], cut from soft ink:
    [(28x28 image, (x0, y0, x1, y1), ten probabilities)], left to right."""
    parts = []
    for probs, x0, x1 in spans:
        inside = np.zeros(own.shape, bool)
        inside[:, x0:x1] = True
        part = own & inside
        image = None
        if part.any():
            # A neighbour's stroke reaching into the span is left out: its ink is a small share of the span's.
            n, lab, stats, _ = cv2.connectedComponentsWithStats(part.astype(np.uint8), connectivity=8)
            areas = stats[1:, 4]
            part = np.isin(lab, np.flatnonzero(areas >= REMNANT * areas.sum()) + 1)
            near = cv2.dilate(part.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
            image = _part_form(soft * (near & inside))
        if image is None:  # too little of the piece's own ink there: the span's soft ink as it is
            image, part = to_mnist(soft * inside), (soft * inside) > INK_SPAN
        ys, xs = np.nonzero(part)
        box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1) if len(ys) else (x0, 0, x1, own.shape[0])
        parts.append((image, box, probs))
    return parts


def _split(soft: np.ndarray, own: np.ndarray, b: _Blob, score: Score):
    """Cut a wide piece into the digits it holds, choosing the cuts whose parts the classifier reads best.

    Returns [(28x28 image, (x0, y0, x1, y1) in the soft region)] for two or more digits, or None when
    the piece reads best whole.
    """
    oy, ox = own.shape[0], own.shape[1]
    ys, xs = np.nonzero(own)
    top, bottom = int(ys.min()), int(ys.max()) + 1
    whole_p = float(score(to_mnist(soft)[None])[0].max())
    if b.w < SURE_SPLIT * b.h and whole_p >= SURE_WHOLE:
        return None
    paths = _cuts(own[top:bottom], bottom - top)
    if not paths:
        return None
    # Paths over the whole soft region: rows above and below the piece keep its end points.
    full = [np.concatenate((np.full(top, p[0]), p, np.full(oy - bottom, p[-1]))) for p, _ in paths]
    penalty = [0.0] + [CUT_PENALTY * c for _, c in paths] + [0.0]  # paid by the part ending at that cut
    bounds = [np.full(oy, -1)] + full + [np.full(oy, ox + 1)]
    cols = np.arange(ox)[None, :]
    height = b.h
    spans, images, boxes = [], [], []
    for i in range(len(bounds) - 1):
        for j in range(i + 1, min(len(bounds), i + 1 + PARTS_PER_DIGIT)):
            if i == 0 and j == len(bounds) - 1:
                continue  # the whole piece: read below
            inside = (cols >= bounds[i][:, None]) & (cols < bounds[j][:, None])
            part = own & inside
            if not part.any():
                continue
            n, lab, stats, _ = cv2.connectedComponentsWithStats(part.astype(np.uint8), connectivity=8)
            areas = stats[1:, 4]
            keep = np.flatnonzero(areas >= REMNANT * areas.sum()) + 1
            part = np.isin(lab, keep)
            pys, pxs = np.nonzero(part)
            x0, x1 = int(pxs.min()), int(pxs.max()) + 1
            if not PART_MIN * height <= x1 - x0 <= PART_MAX * height or np.ptp(pys) + 1 < PART_HEIGHT * height:
                continue
            # The part's faint edges: the soft ink near its strokes, on its side of the cuts.
            near = cv2.dilate(part.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
            image = _part_form(soft * (near & inside))
            if image is None:
                continue
            images.append(image)
            boxes.append((x0, int(pys.min()), x1, int(pys.max()) + 1))
            spans.append((i, j))
    if not spans:
        return None
    probs = score(np.stack(images))
    gain = np.log(np.maximum(probs.max(axis=1), 1e-9)) + PART_BONUS - np.array([penalty[j] for _, j in spans])
    whole = float(np.log(max(whole_p, 1e-9))) + PART_BONUS
    best = np.full(len(bounds), -np.inf)
    back = [-1] * len(bounds)
    best[0] = 0.0
    for k, (i, j) in enumerate(spans):  # spans come in order of i, so best[i] is final when used
        if best[i] + gain[k] > best[j]:
            best[j], back[j] = best[i] + gain[k], k
    if not np.isfinite(best[-1]) or best[-1] <= whole:
        return None
    chosen, j = [], len(bounds) - 1
    while j > 0:
        k = back[j]
        chosen.append((images[k], boxes[k]))
        j = spans[k][0]
    return chosen[::-1]
