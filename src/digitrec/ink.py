"""Where the ink is: the paper's brightness, the ink's polarity and strength, ruled lines erased.

    >>> from digitrec.images import load_image, to_gray
    >>> from digitrec.ink import find_ink
    >>> find_ink(to_gray(load_image("board.jpg").pixels)).dark_on_light
    False
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

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
INK_SCALE = 3  # ink is averaged over squares this many pixels wide (a thin pen's stroke)
IMPULSE_SHARE = 0.5  # when more of the pixels standing out than this stand alone, they are salt-and-pepper noise
FLAT_PAPER = 75  # paper of one brightness: this percentile of the picture (a tight crop is up to half ink) ...
FLAT_WINS = 0.5  # ... is taken when the paper looks at least this much less noisy against it
PAPER_SHOWS = 0.25  # a region along the border where this share is paper between strokes is ink on paper, not a desk

# Ruled lines (notebook rules, graph paper, a margin) are erased before digits are looked for.
RULE_SPAN = 0.75  # a rule crosses at least this much of the picture (half if it runs out of it) ...
RULE_MIN_LENGTH = 100  # ... and at least this many pixels ...
RULE_MIN_ACROSS = 1.5  # ... or this many times the picture's other side (no digit of a strip is that wide) ...
RULE_COVER = 0.8  # ... with ink along this share of its length ...
RULE_RUN = 0.04  # ... in straight runs at least this long (also as a fraction of the picture's side) ...
RULE_THICKNESS = 0.015  # ... and is at most this thick (fraction of the picture's other side, 4 pixels at least)
RULE_STRAIGHT = 1.5  # ... its runs lying within this many pixels of one straight line (beyond half its thickness)
MAX_RULES = 60  # most lines tried among runs that digits link together ...
RULE_TILT = 0.2  # ... each tilted at most this much (radians) from the runs' direction ...
RULE_LINE_COVER = 0.9  # ... with ink along this share of its length (strokes crossing a printed rule do not break it) ...
RULE_EDGES = 0.5  # ... and straight edges along this share of it
RULE_POOL = 4  # which runs form one rule is worked out on a copy this many times smaller


@dataclass(frozen=True)
class Ink:
    strength: np.ndarray  # (H, W) float32: ink's departure from the paper, as a fraction of the paper's brightness
    threshold: float  # weakest strength that is ink rather than noise
    level: float  # typical strength of the strokes (0 when there are none)
    dark_on_light: bool  # dark ink on light paper (else light ink on a dark board)
    sharp: np.ndarray | None = None  # strength before it was averaged over a stroke's width (same scale)


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
    ink = _against(gray, _upscale(paper, w, h), dark, _upscale(edges, w, h) > 0 if edges.any() else None, step)
    if dark and ink.threshold > MIN_CONTRAST:
        # Paper that looks noisy may be paper misjudged: in a crop cut tight to bold digits the wide
        # median lands inside the strokes in places, and the paper there reads as faint ink or less
        # than none, so its spread hides the strokes. Paper of one brightness (a small crop's usually
        # is) is taken instead where the paper then looks much more even. Not on a board: chalk dust
        # and the light on it vary too much for one brightness.
        grid_paper = float(np.percentile(grid, FLAT_PAPER))
        flat = _against(gray, np.full((h, w), grid_paper, np.float32), dark, None, step, paper_only=True)
        if flat.level > 0 and flat.threshold < FLAT_WINS * ink.threshold:
            return flat
    return ink


def _against(gray: np.ndarray, paper: np.ndarray, dark: bool, edges: np.ndarray | None, step: int,
             paper_only: bool = False) -> Ink:
    """The ink measured against the paper's brightness `paper` (H, W); nothing is ink where `edges`.
    The paper's own level is the median of the picture, or with `paper_only` the median of what is
    within MIN_CONTRAST of the paper given (when up to half the picture may be ink)."""
    # Ink over paper as a ratio: both are lit by the same light, so uneven lighting cancels.
    strength = (paper - gray) if dark else (gray - paper)
    strength /= np.maximum(paper, PAPER_FLOOR)
    if edges is not None:
        strength[edges] = 0
    strength = _without_impulses(strength, step)
    # Measured over a stroke's width rather than a pixel: printed dots and hatching under the ink are
    # finer than a pen's stroke and average out, the stroke does not.
    sharp = strength
    strength = cv2.blur(strength, (INK_SCALE, INK_SCALE))
    sample = strength[::step, ::step]
    near = sample[sample < MIN_CONTRAST] if paper_only else sample
    centre = float(np.median(near if near.size else sample))
    strength -= centre
    # Noise from the paper's side only: ink departs to one side, and a tight crop is a third ink.
    below = centre - sample[sample <= centre]
    noise = 1.4826 * float(np.median(below)) if below.size else 0.0
    threshold = max(NOISE_SIGMAS * noise, MIN_CONTRAST)
    inked = sample[sample > threshold]
    if inked.size < 100:  # thin strokes can slip between the sampled pixels
        inked = strength[strength > threshold]
    level = float(np.percentile(inked, 75)) if inked.size else 0.0
    return Ink(strength, threshold, level, dark, sharp - centre)


def _without_impulses(strength: np.ndarray, step: int) -> np.ndarray:
    """The strength with salt-and-pepper noise taken out by a 3x3 median, when the picture has it.

    A stroke's pixels stand out together; the dots of impulse noise (a bad sensor, a fax, dust) stand
    out one by one. Averaging would spread each dot into a speck, and specks close together into marks
    that read as digits, so when most pixels that stand out have no neighbour that does, the median
    goes first. It would thin hairline strokes, so it is used only then.
    """
    raw = strength > float(np.median(strength[::step, ::step])) + MIN_CONTRAST
    out = int(raw.sum())
    if out < 100:
        return strength
    neighbours = cv2.filter2D(raw.astype(np.uint8), -1, np.ones((3, 3), np.float32), borderType=cv2.BORDER_CONSTANT)
    alone = int((raw & (neighbours == 1)).sum())  # the pixel itself is its only one
    if alone <= IMPULSE_SHARE * out:
        return strength
    return cv2.medianBlur(strength.astype(np.float32), 3)


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
    # Along the border, a crop tight to the ink still shows paper between its strokes; a desk does not.
    paperish = np.abs(small - closed) <= max(NOISE_SIGMAS * noise, BLOB_FILL * contrast)
    if n > 1 and not inside[1:].all():
        shows = np.bincount(labels.ravel(), weights=paperish.ravel(), minlength=n) / np.maximum(stats[:, 4], 1)
        inside |= shows >= PAPER_SHOWS
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


def _on_lines(runs: np.ndarray, thickness: float, need: float) -> np.ndarray:
    """The runs (rows: across, columns: along) that lie on straight lines at least `need` long with ink
    along RULE_LINE_COVER of them and straight edges, as a mask. A lone rule is fitted directly; where
    strokes link several rules, the lines are found by a Hough transform, strongest first. Each line is
    fitted to the runs near it and fitted again, following a tilted rule to its ends."""
    band = np.zeros(runs.shape, bool)
    left = runs.astype(np.uint8)
    half = thickness / 2 + RULE_STRAIGHT
    ys, xs = np.nonzero(left)
    if not len(ys):
        return band
    slope, offset = _fit(xs, ys)
    if np.mean(np.abs(ys - (slope * xs + offset)) <= half) >= RULE_LINE_COVER:
        candidates = [(slope, offset)]  # one straight line, with little else linked to it
    else:
        found = cv2.HoughLines(left, 1, np.pi / 360, max(8, int(RULE_COVER * need)),
                               min_theta=np.pi / 2 - RULE_TILT, max_theta=np.pi / 2 + RULE_TILT)
        candidates = [] if found is None else [(-1 / np.tan(t), r / np.sin(t)) for r, t in found[:MAX_RULES, 0]]
    for slope, offset in candidates:
        ys, xs = np.nonzero(left)
        if not len(ys):
            break
        near = np.abs(ys - (slope * xs + offset)) <= half
        for _ in range(12):  # a tilted rule is followed out a little further each time
            if near.sum() < 2 or np.ptp(xs[near]) == 0:
                break
            slope, offset = _fit(xs[near], ys[near])
            grown = np.abs(ys - (slope * xs + offset)) <= half
            if (grown == near).all():
                break
            near = grown
        along = np.flatnonzero(np.bincount(xs[near], minlength=1))  # the columns it has ink in
        if not len(along) or along[-1] - along[0] + 1 < need or len(along) < RULE_LINE_COVER * (along[-1] - along[0] + 1):
            continue
        if _straight_edges(xs[near], ys[near] - (slope * xs[near] + offset)) < RULE_EDGES:
            continue  # the tops or bellies of a row of digits, lined up
        band[ys[near], xs[near]] = True
        left[ys[near], xs[near]] = 0
    return band


def _fit(xs: np.ndarray, ys: np.ndarray) -> tuple[float, float]:
    """Least-squares line y = slope * x + offset through the points."""
    mx, my = float(xs.mean()), float(ys.mean())
    dx = xs - mx
    var = float((dx * dx).sum())
    slope = float((dx * (ys - my)).sum()) / var if var else 0.0
    return slope, my - slope * mx


def _straight_edges(xs: np.ndarray, offsets: np.ndarray) -> float:
    """The share of the columns along a line where the ink near it starts and ends where it mostly does
    (within a pixel): its edges are straight, as a printed rule's are between the strokes crossing it.
    xs: each pixel's column, offsets: its distance across from the line."""
    order = np.argsort(xs, kind="stable")
    xs, offsets = xs[order], offsets[order]
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    top, bottom = np.minimum.reduceat(offsets, starts), np.maximum.reduceat(offsets, starts)
    return float(np.mean((np.abs(top - np.median(top)) <= 1) & (np.abs(bottom - np.median(bottom)) <= 1)))


def _erase_rules(strength: np.ndarray, cut: float) -> None:
    """Erase ruled lines from the ink above `cut` (in place), keeping the strokes that cross them.

    A rule is long, thin and straight: runs of ink along one axis that together span most of the
    picture and lie on one line with straight edges (_on_lines); only the ink on that line is the
    rule's, not the digits' strokes linked to it. On the rule, a pixel keeps only as much ink as there is on both sides of the rule
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
        on_rule = np.zeros((h, w), bool)  # the pixels of the rules found, along the line each follows
        thickness = 0.0
        min_length = min(RULE_MIN_LENGTH, RULE_MIN_ACROSS * other)
        span = max(RULE_SPAN * side / 2, min_length)
        for i in np.flatnonzero(stats[:, 2 if axis == 1 else 3] >= span)[1:]:
            x, y, bw, bh = stats[i, :4]
            # A tilted rule leaves the picture through a side: then half the span will do.
            out = x == 0 or y == 0 or x + bw >= w or y + bh >= h
            need = span if out else max(RULE_SPAN * side, min_length)
            region = runs[y:y + bh, x:x + bw] > 0
            inside = full(lab[y // k:(y + bh) // k, x // k:(x + bw) // k] == i)[:region.shape[0], :region.shape[1]] & region
            if axis == 0:
                inside = inside.T
            # Thickness at each point along: ink across, shared among the rules there (digits can link several).
            crossings = (inside[1:] & ~inside[:-1]).sum(axis=0) + inside[0]
            along = np.flatnonzero(crossings)
            if along[-1] - along[0] + 1 < need:  # only the bridges made it long
                continue
            if len(along) < RULE_COVER * (along[-1] - along[0] + 1):  # the tops of a row of digits, not a rule
                continue
            across = inside.sum(axis=0) / np.maximum(crossings, 1)
            t = float(np.percentile(across[along], 20))  # strokes on a rule do not count
            if t > max(4.0, RULE_THICKNESS * other) + INK_SCALE - 1:  # the averaging widens it
                continue
            # A rule is straight: most of its runs lie on one line. Pen strokes bridged into a long row
            # (the bars and bellies of a row of digits) lie at many heights; only the runs on the line
            # are the rule's, and the digits' strokes off it are no part of it.
            band = _on_lines(inside, t, need)
            if axis == 0:
                band = band.T
            on_rule[y:y + bh, x:x + bw] |= band
            thickness = max(thickness, t)
        if not on_rule.any():
            continue
        on_rule = cv2.dilate(on_rule.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
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
