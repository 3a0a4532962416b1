"""Reading a piece of ink that holds several touching digits at once: a small CNN over the piece's
width, trained with CTC on synthetic strings made from MNIST training digits.

No cuts are searched: the network gives, for every few columns of the piece, how likely each digit
(or nothing) is there; the best path through those columns is the text, and the columns where each
digit was read give its span.

    >>> from digitrec.strings import read
    >>> read(soft)                    # soft ink of one piece, float32 0..1, (H, W)
    [(4, 0.998, 0, 31), (7, 0.991, 31, 58)]      # (digit, probability, x0, x1) left to right

Training and export:

    python -m digitrec.strings train --out runs/strings [--steps N] [--threads N] [--resume] [--seed N]
    python -m digitrec.strings export runs/strings     # writes runs/strings/strings.onnx
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from digitrec.errors import UsageError

HEIGHT = 32  # the network reads pieces brought to this height
INK_HEIGHT = 24  # ... their ink filling this many rows of it, centred
MARGIN = 4  # empty columns put before and after the ink
WIDTH_STEP = 4  # widths are padded to a multiple of this
FRAME = 2  # input columns per output column (the network halves the width once)
MAX_WIDTH = 1024  # a piece is read at most this wide (about 40 digits); wider ones are shrunk
CLASSES = 11  # blank + the ten digits
BLANK = 0
INK_EPS = 0.05  # soft ink above this counts when measuring the ink's extent
STRETCHES = (1.0, 1.3)  # a piece is read as it is and this much wider; the likeliest reading stands
ONNX_NAME = "strings.onnx"
WEIGHTS_DIR = Path(__file__).with_name("weights")

TRAIN_POOL = 50000  # strings are made from MNIST training digits below this index only ...
HELD_OUT = (50000, 60000)  # ... and measured on the ones after them, which training never sees


# --------------------------------------------------------------------------------------------- model

def build_model():
    """The string network: 2-D convolutions fold the height into features, 1-D ones read along the width.

    (B, 1, 32, W) -> per-column logits (B, W / 2, 11).
    """
    import torch
    from torch import nn

    def block(cin, cout, pool):
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                nn.MaxPool2d(pool)]

    def line(cin, cout, dilation):
        return [nn.Conv1d(cin, cout, 3, padding=dilation, dilation=dilation, bias=False), nn.BatchNorm1d(cout),
                nn.ReLU(inplace=True)]

    class StringNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                *block(1, 16, (2, 2)),  # (B, 16, 16, W/2)
                *block(16, 32, (2, 1)),  # (B, 32, 8, W/2)
                *block(32, 64, (2, 1)),  # (B, 64, 4, W/2)
                *block(64, 64, (2, 1)),  # (B, 64, 2, W/2)
            )
            # Dilated convolutions along the width see about two digits either side of a column.
            self.sequence = nn.Sequential(*line(128, 128, 1), *line(128, 128, 2), *line(128, 128, 4),
                                          *line(128, 128, 1))
            self.head = nn.Conv1d(128, CLASSES, 1)

        def forward(self, x):
            f = self.features(x)  # (B, 64, 2, W/2)
            f = f.flatten(1, 2)  # (B, 128, W/2)
            return self.head(self.sequence(f)).transpose(1, 2)  # (B, W/2, 11)

    return StringNet()


# ----------------------------------------------------------------------------------------- synthesis

# Layout of a synthetic string (sizes in rows of the 32-row picture, widths as fractions of a digit's).
LENGTH_WEIGHTS = (0.12, 0.2, 0.2, 0.2, 0.16, 0.12)  # how often strings of 1..6 digits are made
DIGIT_HEIGHT = (15.0, 27.0)  # the string's digit height
DIGIT_SCALE = (0.8, 1.1)  # each digit's own size, relative to the string's
ASPECT = (0.75, 1.3)  # widths squeezed or stretched
SLANT = 0.35  # shear: columns move up to this many pixels per row
RISE = 0.08  # each digit sits up to this share of the height above or below the line ...
DRIFT = 0.06  # ... and the line climbs or falls this much per digit
GAP_APART = (0.05, 0.5)  # neighbours apart: gap in digit heights
GAP_TOUCH = (-0.12, 0.03)  # touching: bounding boxes meet, give or take this share of the narrower one
GAP_OVERLAP = (-0.38, -0.12)  # overlapping: up to ~35% of the narrower digit
GAP_MODES = (0.15, 0.15, 0.2, 0.5)  # how often neighbours stand apart, touch, overlap, are slid into contact
INK_CONTACT = 0.35  # strokes meet where both digits' ink is above this
CONTACT_OVERLAP = (0.0, 0.12)  # after their strokes meet, neighbours slide on by this share of the height
LIGATURE = 0.2  # chance that a pen stroke joins two neighbours
SEPARATOR = 0.12  # chance of a dot, comma or dash between two neighbours (read as nothing)
RULE = 0.12  # chance of a rule under (or, a quarter of those, through) the string
THICKEN, THIN = 0.3, 0.15  # chance that the strokes are made bolder or thinner
# Amounts: many numbers people write end in zeros, and those are written fast, as leaning ovals that
# run into each other (the cents of a check's `1.500,00`). MNIST's zeros are upright and apart.
ZERO_RUN = 0.3  # chance that a string ends in a run of 1-4 zeros ...
PEN_ZERO = 0.5  # ... each of them, as often as not, drawn as a fast pen writes it (marks.pen_zeros) ...
RUN_LIGATURE = 0.5  # ... joined to the next one by the pen this often ...
RUN_MODES = (0.1, 0.3, 0.3, 0.3)  # ... standing apart, touching, overlapping or slid into contact this often ...
RUN_SCALE = (0.6, 1.0)  # ... and as big as the digits before them, or smaller
RUN_RISE = 0.15  # ... and raised by up to this share of the height
PEN_ZEROS = 4000  # drawn zeros in the pool
STYLED_ONES = 0.3  # share of strings whose 1s and 7s augment.restyle writes in the continental way
NOISE, BLUR = 0.3, 0.3  # chance of noise on the ink and of a blur


def _boxes(images: np.ndarray) -> np.ndarray:
    """Tight ink box of each 28x28 digit: (N, 4) float x0, x1, y0, y1 (exclusive ends)."""
    ink = images > 40
    cols, rows = ink.any(axis=1), ink.any(axis=2)
    x0 = cols.argmax(axis=1)
    x1 = 28 - cols[:, ::-1].argmax(axis=1)
    y0 = rows.argmax(axis=1)
    y1 = 28 - rows[:, ::-1].argmax(axis=1)
    return np.stack([x0, x1, y0, y1], axis=1).astype(np.float32)


class StringMaker:
    """Batches of synthetic digit strings, made with tensor operations from a pool of 28x28 digits.

    >>> maker = StringMaker(mnist.train_images[:50000], mnist.train_labels[:50000], seed=0)
    >>> x, targets, lengths = maker.batch(64)      # (64, 1, 32, W) float 0..1, (64, 6) labels, (64,) lengths
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, seed: int = 0, zeros: np.ndarray | None = None,
                 zero_runs: float | None = None, continental: float | None = None):
        """`zeros`: drawn zeros (28x28 uint8) that runs of zeros also take from, as often as PEN_ZERO;
        `zero_runs`, `continental`: shares of strings ending in zeros and written with continental 1s
        (default ZERO_RUN and STYLED_ONES)."""
        import torch

        self.zero_runs = ZERO_RUN if zero_runs is None else zero_runs
        self.continental = STYLED_ONES if continental is None else continental

        keep = (images > 40).reshape(len(images), -1).any(axis=1)  # a blank image has no box
        images, labels = images[keep], labels[keep]
        drawn = np.zeros((0, 28, 28), np.uint8) if zeros is None else zeros[(zeros > 40).reshape(len(zeros), -1).any(axis=1)]
        self.zeros = torch.from_numpy(np.flatnonzero(labels == 0))  # the pool's zeros ...
        self.pen_zeros = torch.arange(len(images), len(images) + len(drawn))  # ... and the drawn ones after them
        images = np.concatenate([images, drawn])
        labels = np.concatenate([labels, np.zeros(len(drawn), labels.dtype)])
        self.images = torch.from_numpy(images.astype(np.float32) / 255)[:, None]  # (N, 1, 28, 28)
        self.labels = torch.from_numpy(labels.astype(np.int64))
        self.boxes = torch.from_numpy(_boxes(images))
        self.gen = torch.Generator().manual_seed(seed)

    def _u(self, shape, lo, hi):
        import torch

        return lo + (hi - lo) * torch.rand(shape, generator=self.gen)

    def _draw(self, glyphs, on, placement, B: int, L: int, W: int):
        """Each digit (glyphs: the (n, 1, 28, 28) images of the digits there are) drawn into its own
        picture of the string: (B, L, H, W)."""
        import torch
        import torch.nn.functional as F

        scx, scy, tcx, tcy, zoom, slant, stretch = (t.flatten()[on][:, None, None] for t in placement)  # (n, 1, 1)
        vs = torch.arange(HEIGHT, dtype=torch.float32)[None, :, None] + 0.5  # (1, H, 1)
        us = torch.arange(W, dtype=torch.float32)[None, None, :] + 0.5  # (1, 1, W)
        sy = scy + (vs - tcy) / zoom
        sx = scx + ((us - tcx) - slant * (vs - tcy)) / stretch  # (n, H, W)
        grid = torch.stack([sx.expand(-1, HEIGHT, W) / 14 - 1, sy.expand(-1, HEIGHT, W) / 14 - 1], -1)
        drawn = torch.zeros(B * L, HEIGHT, W)
        drawn[on] = F.grid_sample(glyphs, grid, align_corners=False)[:, 0]
        return drawn.view(B, L, HEIGHT, W)

    def batch(self, size: int, max_len: int = len(LENGTH_WEIGHTS)):
        """(pictures (B, 1, 32, W), labels (B, max_len) 0-9 padded with -1, lengths (B,))."""
        import torch
        import torch.nn.functional as F

        u = self._u
        B, L = size, max_len
        weights = torch.tensor(LENGTH_WEIGHTS[:L])
        lengths = torch.multinomial(weights, B, replacement=True, generator=self.gen) + 1  # (B,)
        live = torch.arange(L)[None] < lengths[:, None]  # (B, L)
        idx = torch.randint(0, len(self.images) - len(self.pen_zeros), (B, L), generator=self.gen)
        # Amounts end in zeros: the last 1-4 digits of some strings (never all of a longer one's).
        pos = torch.arange(L)[None]
        run_len = torch.minimum(torch.randint(1, 5, (B, 1), generator=self.gen), (lengths[:, None] - 1).clamp(min=1))
        has_run = (torch.rand((B, 1), generator=self.gen) < self.zero_runs) & (len(self.zeros) > 0)
        in_run = has_run & live & (pos >= lengths[:, None] - run_len)  # (B, L)
        if in_run.any():
            mnist_zero = self.zeros[torch.randint(0, max(1, len(self.zeros)), (B, L), generator=self.gen)]
            if len(self.pen_zeros):
                pen = self.pen_zeros[torch.randint(0, len(self.pen_zeros), (B, L), generator=self.gen)]
                mnist_zero = torch.where(torch.rand((B, L), generator=self.gen) < PEN_ZERO, pen, mnist_zero)
            idx = torch.where(in_run, mnist_zero, idx)
        labels = torch.where(live, self.labels[idx], -1)
        box = self.boxes[idx]  # (B, L, 4)
        sw, sh = box[..., 1] - box[..., 0], box[..., 3] - box[..., 2]
        scx, scy = (box[..., 0] + box[..., 1]) / 2, (box[..., 2] + box[..., 3]) / 2

        hs = u((B, 1), *DIGIT_HEIGHT)  # the string's digit height
        th = hs * u((B, L), *DIGIT_SCALE)  # each digit's ink height
        th = torch.where(in_run, th * u((B, 1), *RUN_SCALE), th)
        zoom = th / sh  # target pixels per source pixel
        tw = sw * zoom * u((B, L), *ASPECT)
        slant = u((B, 1), -SLANT, SLANT) + u((B, L), -0.1, 0.1)
        extent = tw + slant.abs() * th  # width of the sheared box

        # Gaps after each digit, by how the neighbours meet.
        mode = torch.multinomial(torch.tensor(GAP_MODES), B * L, replacement=True, generator=self.gen).view(B, L)
        run_mode = torch.multinomial(torch.tensor(RUN_MODES), B * L, replacement=True, generator=self.gen).view(B, L)
        mode = torch.where(torch.roll(in_run, -1, dims=1), run_mode, mode)  # before a zero of the run
        narrower = torch.minimum(extent, torch.roll(extent, -1, dims=1))
        gap = torch.where((mode == 0) | (mode == 3), u((B, L), *GAP_APART) * hs,  # contact: slid together below
                          torch.where(mode == 1, u((B, L), *GAP_TOUCH), u((B, L), *GAP_OVERLAP)) * narrower)
        sep = (torch.rand((B, L), generator=self.gen) < SEPARATOR) & (torch.arange(L)[None] < lengths[:, None] - 1)
        sep_kind = torch.randint(0, 3, (B, L), generator=self.gen)  # dot, comma, dash
        sep_w = torch.where(sep_kind == 2, u((B, L), 0.3, 0.6) * hs, u((B, L), 0.1, 0.2) * hs)
        gap = torch.where(sep, sep_w + u((B, L), -0.1, 0.3) * hs, gap)
        left = MARGIN + u((B, 1), 0, 3) + torch.cumsum(torch.cat([torch.zeros(B, 1), (extent + gap)[:, :-1]], 1), 1)
        left = left - torch.clamp(left.min(dim=1, keepdim=True).values - MARGIN, max=0)  # overlaps never go off the left
        tcx = left + extent / 2
        centre = HEIGHT / 2 + u((B, 1), -2, 2)
        tcy = (centre + u((B, L), -RISE, RISE) * hs + u((B, 1), -DRIFT, DRIFT) * hs
               * (torch.arange(L)[None] - (lengths[:, None] - 1) / 2))
        tcy = torch.where(in_run, tcy - u((B, 1), 0, RUN_RISE) * hs, tcy)
        right = torch.where(live, left + extent, 0).max(dim=1).values  # (B,)
        W = int(math.ceil((float(right.max()) + MARGIN + 2) / WIDTH_STEP) * WIDTH_STEP)

        # Each digit drawn into its own picture of the string, then the pictures laid over each other.
        on = live.flatten()  # only the digits there are get drawn
        glyphs = self.images[idx.flatten()[on]]
        if self.continental > 0:
            from digitrec.augment import restyle

            styled = (torch.rand((B, 1), generator=self.gen) < self.continental).expand(B, L).flatten()[on]
            glyphs = torch.where(styled[:, None, None, None], restyle(glyphs, labels.flatten()[on], self.gen), glyphs)
        drawn = self._draw(glyphs, on, (scx, scy, tcx, tcy, zoom, slant, tw / sw), B, L, W)
        # Neighbours in contact: slid together until their strokes meet in some row, then overlapping more.
        contact = (mode == 3) & ~sep & (torch.arange(L)[None] < lengths[:, None] - 1)
        if contact.any():
            cols = torch.arange(W, dtype=torch.float32)
            ink = drawn > INK_CONTACT
            rightmost = torch.where(ink, cols, -1e6).max(dim=-1).values  # (B, L, H)
            leftmost = torch.where(ink, cols, 1e6).min(dim=-1).values
            apart = (torch.roll(leftmost, -1, dims=1) - rightmost).min(dim=-1).values  # (B, L) columns between them
            slide = torch.where(contact & (apart < W), apart + u((B, L), *CONTACT_OVERLAP) * hs, 0)
            shift = -torch.cat([torch.zeros(B, 1), torch.cumsum(slide, 1)[:, :-1]], 1)  # digit i moves by all before it
            left, tcx = left + shift, tcx + shift
            right = torch.where(live, left + extent, 0).max(dim=1).values
            drawn = self._draw(glyphs, on, (scx, scy, tcx, tcy, zoom, slant, tw / sw), B, L, W)
        x = drawn.max(dim=1).values  # (B, H, W)

        # Strokes that are not digits: ligatures, separators, rules (segments with round ends).
        segs = []  # each (ax, ay, bx, by, radius, on), (B, S)
        bottom = tcy + th / 2
        nxt = lambda t: torch.roll(t, -1, dims=1)  # noqa: E731
        joins = torch.where(torch.roll(in_run, -1, dims=1), RUN_LIGATURE, LIGATURE)
        lig = (torch.rand((B, L), generator=self.gen) < joins) & ~sep & (torch.arange(L)[None] < lengths[:, None] - 1)
        segs.append((left + extent * u((B, L), 0.7, 0.95), tcy + th * u((B, L), -0.1, 0.45),
                     nxt(left) + nxt(extent) * u((B, L), 0.05, 0.3), nxt(tcy) + nxt(th) * u((B, L), -0.4, 0.4),
                     u((B, L), 0.7, 1.6), lig))
        mid = left + extent + gap / 2
        dot = sep & (sep_kind < 2)
        dot_y = bottom - u((B, L), 0, 0.12) * hs
        dot_r = u((B, L), 1.0, 2.2)
        segs.append((mid, dot_y, mid, dot_y, dot_r, dot))
        segs.append((mid, dot_y, mid - u((B, L), 0.5, 2), dot_y + u((B, L), 2, 5), dot_r * 0.6, sep & (sep_kind == 1)))
        dash_y = tcy + u((B, L), -0.15, 0.15) * hs
        segs.append((mid - sep_w / 2, dash_y, mid + sep_w / 2, dash_y + u((B, L), -1, 1), u((B, L), 0.7, 1.5),
                     sep & (sep_kind == 2)))
        rule = torch.rand((B, 1), generator=self.gen) < RULE
        through = torch.rand((B, 1), generator=self.gen) < 0.25
        rule_y = torch.where(through, centre, torch.where(live, bottom, 0).max(dim=1, keepdim=True).values
                             + u((B, 1), -2, 2))
        segs.append((u((B, 1), 0, MARGIN), rule_y, right[:, None] + u((B, 1), 0, MARGIN), rule_y + u((B, 1), -1.5, 1.5),
                     u((B, 1), 0.5, 1.2), rule))
        for ax, ay, bx, by, r, on in segs:
            x = torch.maximum(x, _segments(ax, ay, bx, by, r, on, HEIGHT, W))

        # Pen and picture: bolder or thinner strokes, blur, noise on the ink, uneven strength.
        x = x[:, None]  # (B, 1, H, W)
        pick = torch.rand((B, 1, 1, 1), generator=self.gen)
        bold = F.max_pool2d(x, 3, 1, 1)
        thin = -F.max_pool2d(-x, 3, 1, 1)
        half = u((B, 1, 1, 1), 0.3, 1.0)
        x = torch.where(pick < THICKEN, x + half * (bold - x),
                        torch.where(pick < THICKEN + THIN, x + half * (thin - x), x))
        blurred = F.avg_pool2d(F.pad(x, (1, 1, 1, 1)), 3, 1)
        x = torch.where(torch.rand((B, 1, 1, 1), generator=self.gen) < BLUR, blurred, x)
        x = torch.clamp(x * u((B, 1, 1, 1), 0.8, 1.8), 0, 1)
        near = F.max_pool2d(x, 5, 1, 2) > INK_EPS
        noise = torch.randn(x.shape, generator=self.gen) * u((B, 1, 1, 1), 0, 0.15)
        noisy = torch.rand((B, 1, 1, 1), generator=self.gen) < NOISE
        x = torch.where(noisy, torch.clamp(x + noise * near, 0, 1), x)
        return x.contiguous(), labels, lengths


def _segments(ax, ay, bx, by, r, on, H, W):
    """Round-ended strokes from (ax, ay) to (bx, by) of radius r, where `on`: (B, S) -> (B, H, W) ink."""
    from digitrec.augment import strokes

    return strokes(ax, ay, bx, by, r, on, H, W)


# ----------------------------------------------------------------------------------------- training

DEFAULT_STEPS = 6000  # a schedule that fits about an hour on one core
BATCH = 48  # strings per step
LR = 3e-3  # peak learning rate of the one-cycle schedule
WARMUP = 0.1  # share of the steps spent warming up to it
WEIGHT_DECAY = 1e-4
SAVE_EVERY = 200  # steps between checkpoints
LOG_EVERY = 50  # steps between lines of the log
EVAL_STRINGS = 512  # held-out strings measured at each checkpoint
STATE = "state.safetensors"  # model, optimiser and generator state, for resuming
META = "strings.json"


def _lr(step: int, total: int) -> float:
    warm = max(1, int(WARMUP * total))
    if step < warm:
        return LR * (0.04 + 0.96 * step / warm)
    return LR * (0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))) + 1e-5


def _ctc_batch(logits, labels, lengths):
    import torch
    import torch.nn.functional as F

    log_probs = F.log_softmax(logits.float(), dim=-1).transpose(0, 1)  # (T, B, C)
    T, B = log_probs.shape[:2]
    targets = labels[labels >= 0] + 1  # digits are classes 1..10
    return F.ctc_loss(log_probs, targets, torch.full((B,), T, dtype=torch.long), lengths, blank=BLANK,
                      zero_infinity=True)


def greedy(probs: np.ndarray) -> list[tuple[int, float, int, int]]:
    """Best path of per-frame probabilities (T, 11) -> [(digit, probability, first frame, last frame + 1)]."""
    best = probs.argmax(axis=1)
    out = []
    t = 0
    T = len(best)
    while t < T:
        c = best[t]
        end = t
        while end + 1 < T and best[end + 1] == c:
            end += 1
        if c != BLANK:
            out.append((int(c) - 1, float(probs[t:end + 1, c].max()), t, end + 1))
        t = end + 1
    return out


def sequence_logprob(probs: np.ndarray, digits: list[int]) -> float:
    """Log-probability that per-frame probabilities (T, 11) spell `digits`, over every path that does
    (CTC's forward sum), not just the best one: how well a reading made another way fits the model."""
    T = len(probs)
    ext = [BLANK]
    for d in digits:
        ext += [d + 1, BLANK]
    S = len(ext)
    logp = np.log(np.clip(probs, 1e-30, 1.0)).astype(np.float64)
    alpha = np.full(S, -np.inf)
    alpha[0] = logp[0, BLANK]
    if S > 1:
        alpha[1] = logp[0, ext[1]]
    ext = np.array(ext)
    skip = np.zeros(S, bool)  # a digit may follow the digit before the blank before it when they differ
    skip[2:] = (ext[2:] != BLANK) & (ext[2:] != ext[:-2])
    for t in range(1, T):
        stay = alpha
        step = np.concatenate(([-np.inf], alpha[:-1]))
        jump = np.where(skip, np.concatenate(([-np.inf, -np.inf], alpha[:-2]))[:S], -np.inf)
        alpha = np.logaddexp(np.logaddexp(stay, step), jump) + logp[t, ext]
    return float(np.logaddexp(alpha[-1], alpha[-2]) if S > 1 else alpha[-1])


def evaluate(model, maker: StringMaker, n: int = EVAL_STRINGS, batch: int = 128) -> float:
    """Share of n strings from `maker` read exactly."""
    import torch

    model.eval()
    right = done = 0
    with torch.inference_mode():
        while done < n:
            x, labels, lengths = maker.batch(min(batch, n - done))
            probs = torch.softmax(model(x).float(), -1).numpy()
            for p, lab, ln in zip(probs, labels.numpy(), lengths.numpy()):
                right += [d for d, *_ in greedy(p)] == list(lab[:ln])
            done += len(x)
    model.train()
    return right / n


def _save_state(out: Path, model, opt, gen, step: int, meta: dict) -> None:
    import torch

    from digitrec.checkpoint import save_tensors, write_json

    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    for i, s in opt.state_dict()["state"].items():
        for key in ("exp_avg", "exp_avg_sq"):
            tensors[f"opt.{i}.{key}"] = s[key]
        tensors[f"opt.{i}.step"] = s["step"].reshape(1)
    tensors["rng"] = gen.get_state()
    save_tensors(out / STATE, tensors, {"step": str(step)})
    write_json(out / META, {**meta, "step": step})


def _load_state(out: Path, model, opt, gen) -> int:
    import torch

    from digitrec.checkpoint import load_tensors, read_json

    meta = read_json(out / META, "string-model description")
    tensors = load_tensors(out / STATE)
    try:
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    except RuntimeError as e:
        raise UsageError(f"{out / STATE}: weights do not fit the string model ({str(e).splitlines()[0]})") from None
    state = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, i, key = k.split(".")
            state.setdefault(int(i), {})[key] = v.reshape(()) if key == "step" else v
    opt.load_state_dict({"state": state, "param_groups": []})
    gen.set_state(tensors["rng"])
    return int(meta["step"])


def train(out: Path, steps: int = DEFAULT_STEPS, threads: int = 1, resume: bool = False,
          data_dir: str | None = None, pool: int = TRAIN_POOL, zero_runs: float = ZERO_RUN,
          continental: float = STYLED_ONES, seed: int = 0, log=print) -> dict:
    """Train the string model into `out` (resumable), returning its description."""
    import torch

    from digitrec.checkpoint import save_tensors, write_json
    from digitrec.data import content_sha256, load_mnist, writable_dir
    from digitrec.optim import AdamW

    torch.set_num_threads(threads)
    out = writable_dir(out, "--out")
    if resume and not (out / STATE).is_file():
        raise UsageError(f"{out}: nothing to resume (no {STATE})")
    if not resume and (out / STATE).is_file():
        raise UsageError(f"{out}: a string model is already training there; add --resume to go on with it")
    before = {}
    if resume:  # a run goes on with the strings it was making (its pool of fast zeros comes from the seed)
        from digitrec.checkpoint import read_json

        before = read_json(out / META, "string-model description")
        seed = int(before.get("seed", 0))
    mnist = load_mnist(data_dir)
    if len(mnist.train_images) <= pool:
        raise UsageError(f"the training set has {len(mnist.train_images)} digits: strings are made from the first "
                         f"{pool} and measured on the ones after them, so it needs more")
    images, labels = mnist.train_images[:pool], mnist.train_labels[:pool]
    from digitrec.marks import pen_zeros

    maker = StringMaker(images, labels, seed=seed, zeros=pen_zeros(PEN_ZEROS, seed=seed), zero_runs=zero_runs,
                        continental=continental)
    held_out = (pool, min(len(mnist.train_images), pool + HELD_OUT[1] - HELD_OUT[0]))
    held = mnist.train_images[held_out[0]:held_out[1]], mnist.train_labels[held_out[0]:held_out[1]]
    torch.manual_seed(seed)
    model = build_model()
    decay = [p for p in model.parameters() if p.ndim > 1]
    other = [p for p in model.parameters() if p.ndim <= 1]
    opt = AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": other}], lr=LR)
    meta = {"steps": steps, "batch": BATCH, "lr": LR, "seed": seed, "train_digits": f"MNIST training images 0-{pool - 1}",
            "train_sha256": content_sha256(images, labels), "held_out": f"MNIST training images {held_out[0]}-{held_out[1] - 1}",
            "seconds": 0.0, "history": []}
    step = 0
    if resume:
        step = _load_state(out, model, opt, maker.gen)
        meta = {**meta, **{k: v for k, v in before.items() if k in ("seconds", "history")}}
        # Runs from before these options were made with neither zero runs nor continental 1s.
        stages = before.get("stages") or [{"steps": [0, step], "zero_runs": 0.0, "continental": 0.0}]
        log(f"resuming at step {step} of {steps}")
    else:
        n_params = sum(p.numel() for p in model.parameters())
        log(f"string model: {n_params} parameters; {steps} steps of {BATCH} strings; threads {threads}")
        stages = []
    # What each stretch of steps learned from (a resumed run may go on with another recipe).
    here = {"zero_runs": zero_runs, "continental": continental}
    if stages and {k: stages[-1][k] for k in here} == here:
        stages[-1]["steps"][1] = steps
    elif step < steps:
        stages.append({"steps": [step, steps], **here})
    meta["stages"] = stages
    amp = torch.autocast("cpu", dtype=torch.bfloat16)
    model.train()
    start, seen, loss_sum = time.perf_counter(), 0, 0.0
    base_seconds = meta["seconds"]
    while step < steps:
        for group in opt.param_groups:
            group["lr"] = _lr(step, steps)
        x, lab, ln = maker.batch(BATCH)
        with amp:
            logits = model(x)
        loss = _ctc_batch(logits, lab, ln)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        step += 1
        seen += 1
        loss_sum += loss.item()
        if step % LOG_EVERY == 0:
            elapsed = time.perf_counter() - start
            log(f"step {step}/{steps}  loss {loss_sum / seen:.4f}  lr {_lr(step, steps):.2e}  "
                f"{elapsed / seen:.2f} s/step", flush=True)
            seen, loss_sum, start = 0, 0.0, time.perf_counter()
            meta["seconds"] = base_seconds + elapsed
            base_seconds = meta["seconds"]
        if step % SAVE_EVERY == 0 or step == steps:
            acc = evaluate(model, StringMaker(*held, seed=1))
            meta["history"].append([step, round(acc, 4)])
            meta["held_out_exact"] = acc
            _save_state(out, model, opt, maker.gen, step, meta)
            save_tensors(out / "model.safetensors", model.state_dict(), {"step": str(step)})
            log(f"step {step}: held-out strings read exactly {acc:.3f}; saved", flush=True)
    write_json(out / META, {**meta, "step": step})
    return {**meta, "step": step}


# ------------------------------------------------------------------------------------------- export

def export(run_dir: Path, out: Path | None = None) -> Path:
    """Write the trained string model as ONNX (dynamic width), checked against torch first."""
    import io
    import warnings

    import torch

    from digitrec.checkpoint import load_tensors, read_json
    from digitrec.data import atomic_write_bytes

    run_dir = Path(run_dir)
    meta = read_json(run_dir / META, "string-model description")
    model = build_model()
    state = load_tensors(run_dir / "model.safetensors")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise UsageError(f"{run_dir}: weights do not fit the string model ({str(e).splitlines()[0]})") from None
    model.eval()
    out = Path(out) if out is not None else run_dir / ONNX_NAME
    x = torch.rand(2, 1, HEIGHT, 96, generator=torch.Generator().manual_seed(0))
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation: it gives the same graph here
        torch.onnx.export(model, (x,), buf, dynamo=False, opset_version=17, input_names=["ink"],
                          output_names=["logits"], dynamic_axes={"ink": {0: "batch", 3: "width"},
                                                                 "logits": {0: "batch", 1: "frames"}})
    import onnxruntime as ort

    session = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    for width in (96, 200):
        x = torch.rand(2, 1, HEIGHT, width, generator=torch.Generator().manual_seed(width))
        with torch.inference_mode():
            want = model(x).numpy()
        got = session.run(None, {"ink": x.numpy()})[0]
        if not np.abs(got - want).max() < 1e-3:
            raise UsageError(f"{run_dir}: the ONNX graph does not reproduce the model; not written")
    atomic_write_bytes(out, buf.getvalue())
    facts = {k: meta.get(k) for k in ("step", "steps", "batch", "seed", "train_digits", "train_sha256", "held_out",
                                      "held_out_exact", "seconds", "stages")}
    facts["bytes"] = len(buf.getvalue())
    facts["input"] = f"float32 (N, 1, {HEIGHT}, W) ink 0..1, W a multiple of {WIDTH_STEP}"
    facts["output"] = f"logits (N, W/{FRAME}, {CLASSES}): blank, then digits 0-9"
    from digitrec.checkpoint import write_json

    write_json(out.with_suffix(".json"), facts)
    return out


# -------------------------------------------------------------------------------------------- reading

_session = None


def _run(x: np.ndarray) -> np.ndarray:
    global _session
    if _session is None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        _session = ort.InferenceSession(str(WEIGHTS_DIR / ONNX_NAME), options, providers=["CPUExecutionProvider"])
    return _session.run(None, {"ink": x})[0]


def available() -> bool:
    """Whether the bundled string model is there to read with."""
    return (WEIGHTS_DIR / ONNX_NAME).is_file()


def prepare(soft: np.ndarray) -> tuple[np.ndarray, float, int]:
    """A piece's soft ink -> the network's input (32, W), its scale, and the ink's first column."""
    import cv2

    soft = np.asarray(soft, np.float32)
    ys, xs = np.nonzero(soft > INK_EPS)
    if not len(ys):
        return np.zeros((HEIGHT, WIDTH_STEP * 4), np.float32), 1.0, 0
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    ink = soft[y0:y1, x0:x1]
    f = INK_HEIGHT / (y1 - y0)
    f = min(f, (MAX_WIDTH - 2 * MARGIN) / (x1 - x0))
    w, h = max(1, round((x1 - x0) * f)), max(1, round((y1 - y0) * f))
    small = cv2.resize(ink, (w, h), interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)
    width = int(math.ceil((w + 2 * MARGIN) / WIDTH_STEP) * WIDTH_STEP)
    x = np.zeros((HEIGHT, width), np.float32)
    top = (HEIGHT - h) // 2
    x[top:top + h, MARGIN:MARGIN + w] = np.clip(small, 0, 1)
    return x, f, int(x0)


def read(soft: np.ndarray) -> list[tuple[int, float, int, int]]:
    """The digits in one piece's soft ink (float32 0..1, H x W), left to right, as
    (digit, probability, x0, x1) with x0..x1 the piece's columns each digit spans.

    >>> [d for d, *_ in read(soft_of_touching_47)]
    [4, 7]
    """
    return [(int(p.argmax()), float(p.max()), x0, x1) for p, x0, x1 in read_spans(soft)]


def _frames_at(soft: np.ndarray, stretch: float) -> tuple[np.ndarray, float, float]:
    """frames() of the piece drawn `stretch` times as wide, its scale and first column mapped back to
    the piece's own columns."""
    import cv2

    if stretch != 1:
        h, w = soft.shape
        soft = cv2.resize(soft, (max(1, round(w * stretch)), h), interpolation=cv2.INTER_LINEAR)
    x, f, first = prepare(soft)
    logits = _run(x[None, None])[0]  # (T, 11)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True), f * stretch, first / stretch


def frames(soft: np.ndarray) -> tuple[np.ndarray, float, float]:
    """The network's per-frame probabilities (T, 11: blank, then the digits) for a piece's soft ink, with
    the scale and first column that map frames back to the piece's columns.

    The piece is read as it is and drawn wider (STRETCHES): a narrow 1 half hidden in its neighbour
    gets frames of its own there. Each reading's digits are scored by every one of them (the sum of
    their log-probabilities, as in sequence_logprob), and the frames returned are those of the reading
    whose digits score best, where they are likeliest."""
    soft = np.asarray(soft, np.float32)
    framed = [_frames_at(soft, s) for s in STRETCHES]
    if len(framed) == 1:
        return framed[0]
    read = [tuple(d for d, *_ in greedy(probs)) for probs, _, _ in framed]
    plain = read[0]
    readings = {r for r in read if len(r) > len(plain)} | {plain}
    if len(readings) == 1:
        return framed[0]
    score = {r: [sequence_logprob(probs, list(r)) for probs, _, _ in framed] for r in readings}
    best = max(readings, key=lambda r: (sum(score[r]), r))
    own = [i for i, r in enumerate(read) if r == best]
    return framed[max(own, key=lambda i: score[best][i])]


def centres(soft: np.ndarray, framed: tuple[np.ndarray, float, float] | None = None) -> list[tuple[int, float]]:
    """[(digit, the column of soft where the model reads it)], left to right: where each digit read is."""
    probs, f, first = framed if framed is not None else frames(np.asarray(soft, np.float32))
    return [(d, ((a + b) / 2 * FRAME - MARGIN) / f + first) for d, _, a, b in greedy(probs)]


def read_spans(soft: np.ndarray, framed: tuple[np.ndarray, float, float] | None = None
               ) -> list[tuple[np.ndarray, int, int]]:
    """As read, with each digit's ten probabilities (at the column where it is surest) instead of one.
    `framed`: what frames(soft) gave, when the caller has it already."""
    soft = np.asarray(soft, np.float32)
    probs, f, first = framed if framed is not None else frames(soft)
    found = greedy(probs)
    if not found:
        return []
    width = soft.shape[1]

    def column(frame: float) -> int:  # a frame boundary in the piece's columns
        return int(np.clip(round((frame * FRAME - MARGIN) / f + first), 0, width))

    ink_cols = np.flatnonzero((soft > INK_EPS).any(axis=0))
    centres = [(a + b) / 2 for _, _, a, b in found]
    cuts = [column((a + b) / 2) for a, b in zip(centres, centres[1:])]
    starts = [int(ink_cols[0])] + cuts
    ends = cuts + [int(ink_cols[-1]) + 1]
    out = []
    for (d, _, a, b), s, e_ in zip(found, starts, ends):
        peak = a + int(probs[a:b, d + 1].argmax())
        digits = probs[peak, 1:] / max(float(probs[peak, 1:].sum()), 1e-9)  # blank left out
        out.append((digits.astype(np.float32), s, max(e_, s + 1)))
    return out


# ------------------------------------------------------------------------------------------- commands

def main(argv: list[str] | None = None) -> int:
    from digitrec.cli import EXIT_USAGE, Parser, positive_int, share

    parser = Parser(prog="python -m digitrec.strings", description="Train and export the string model.")
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train the string model on synthetic strings")
    t.add_argument("--out", required=True, help="run folder: checkpoints and the log's facts go here")
    t.add_argument("--steps", type=positive_int, default=DEFAULT_STEPS, help=f"optimiser steps (default {DEFAULT_STEPS})")
    t.add_argument("--threads", type=positive_int, default=1, help="CPU threads (default 1)")
    t.add_argument("--resume", action="store_true", help="go on from the last checkpoint in --out")
    t.add_argument("--data-dir", help="where the MNIST files are (default: $DIGITREC_DATA, else the user cache)")
    t.add_argument("--zero-runs", type=share, default=ZERO_RUN, metavar="SHARE",
                   help=f"share of strings that end in 1-4 zeros, as amounts do (default {ZERO_RUN})")
    t.add_argument("--continental", type=share, default=STYLED_ONES, metavar="SHARE",
                   help=f"share of strings whose 1s may have a long up-stroke and 7s a bar (default {STYLED_ONES})")
    t.add_argument("--seed", type=int, default=0,
                   help="seed of the first weights and of the strings made (default 0; a resumed run keeps its own)")
    t.add_argument("--pool", type=positive_int, default=TRAIN_POOL, help=argparse.SUPPRESS)  # tiny runs in tests
    e = sub.add_parser("export", help="write the trained string model as ONNX")
    e.add_argument("run", help="the run folder given to train --out")
    e.add_argument("--out", help=f"ONNX file to write (default RUN/{ONNX_NAME})")
    args = parser.parse_args(argv)
    try:
        if args.command == "train":
            if args.pool > TRAIN_POOL:
                raise UsageError(f"--pool: training digits are taken below index {TRAIN_POOL} only")
            meta = train(Path(args.out), args.steps, args.threads, args.resume, args.data_dir, args.pool,
                         args.zero_runs, args.continental, args.seed)
            print(f"done: step {meta['step']}, held-out strings read exactly {meta.get('held_out_exact', 0):.3f}")
        else:
            print(export(Path(args.run), Path(args.out) if args.out else None))
    except UsageError as err:
        print(f"{parser.prog} {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"\n{parser.prog}: interrupted; the last checkpoint is kept (add --resume to go on)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
