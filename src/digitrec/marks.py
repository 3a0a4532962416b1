"""Telling digits from other marks: a letter, a symbol or a scribble is no digit.

A digit classifier has ten answers and gives one of them to anything, often surely: an `A` reads
as a 4, a `$` as an 8. A second, small network looks at the same 28x28 input and says how likely
it is to be a digit at all. It learned from MNIST training digits and digits in many typefaces
(digits) against letters, symbols and scribbles in many typefaces, pen widths and slants (not
digits). Letters and signs that are written like digits (O, l, I, Z, S, B, g, q, P, C, L, h, U, V,
n, r, t, < and >, which is how continental 1s and open 0s look) are left out of the
"not a digit" side: a reader cannot tell them apart from the digit either.

    python -m digitrec.marks train --out runs/marks [--steps N] [--threads N]
    python -m digitrec.marks export runs/marks            # -> src/digitrec/weights/marks.onnx

At reading time the bundled `weights/marks.onnx` runs with ONNX Runtime (`digit_probability`).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from digitrec.shape import to_mnist

WEIGHTS = Path(__file__).resolve().parent / "weights" / "marks.onnx"
FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")  # Debian's fonts-dejavu-core; used for training only
# Letters and signs that no one writes as a digit (the lookalikes listed above are left out).
NOT_DIGITS = "AEFHKMNRWXYaefkmwxy$#%&@*+=?~"
SCRIBBLE_SHARE = 0.25  # share of the marks that are scribbles: random pen paths with sharp turns ...
SCRIBBLE_SPREAD = 0.5  # ... whose ink is at least this many times as wide as high (or high as wide)
HERSHEY = [cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX, cv2.FONT_HERSHEY_TRIPLEX,
           cv2.FONT_HERSHEY_SCRIPT_SIMPLEX, cv2.FONT_HERSHEY_PLAIN]
HELD_OUT_FONT = cv2.FONT_HERSHEY_SCRIPT_COMPLEX  # never trained on: measures marks in a hand not seen
CLUTTER_SHARE = 0.25  # share of the training inputs that get each kind of clutter
MARK_LEVEL = 0.002  # a mark the network gives less than this probability of being a digit is left out (no MNIST test digit is)
TRAIN_DIGITS = 50_000  # MNIST training digits learned from; the rest of the training set measures


def _ttf_fonts() -> list[Path]:
    return sorted(p for p in FONT_DIR.glob("DejaVu*.ttf") if "MathTeX" not in p.name)


def _glyph(ch: str, font, rng: np.random.Generator) -> np.ndarray:
    """One character's ink coverage (float32, 0-1) as drawn by a Hershey or TrueType font, with a pen
    of random width, slanted, stretched and turned at random."""
    if isinstance(font, int):
        c = np.zeros((160, 160), np.uint8)
        thick = int(rng.integers(2, 12))
        cv2.putText(c, ch, (30, 120), font, 3.0, 255, thick, cv2.LINE_AA)
    else:
        from PIL import Image, ImageDraw, ImageFont
        im = Image.new("L", (160, 160))
        ImageDraw.Draw(im).text((30, 20), ch, fill=255, font=ImageFont.truetype(str(font), 96))
        c = np.asarray(im).copy()
        k = int(rng.integers(0, 3))
        if k:
            c = cv2.dilate(c, np.ones((k * 2 + 1, k * 2 + 1), np.uint8)) if rng.random() < 0.5 else \
                cv2.erode(c, np.ones((k + 1, k + 1), np.uint8))
    return _warp(c.astype(np.float32) / 255, rng)


def _scribble(rng: np.random.Generator) -> np.ndarray:
    """A random pen path: a few points joined by a smooth curve that turns sharply and crosses itself."""
    c = np.zeros((160, 160), np.uint8)
    n = int(rng.integers(5, 10))
    pts = rng.uniform(30, 130, (n, 2))
    t = np.linspace(0, 1, 12 * n)
    # A Catmull-Rom-like path through the points, drawn as short segments.
    idx = np.minimum((t * (n - 1)).astype(int), n - 2)
    f = (t * (n - 1) - idx)[:, None]
    path = (1 - f) * pts[idx] + f * pts[idx + 1] + rng.normal(0, 2, (len(t), 2))
    cv2.polylines(c, [path.astype(np.int32)], False, 255, int(rng.integers(3, 12)), cv2.LINE_AA)
    return _warp(c.astype(np.float32) / 255, rng)


def _warp(c: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = c.shape
    a = math.radians(rng.uniform(-15, 15))
    shear = rng.uniform(-0.3, 0.3)
    sx = rng.uniform(0.7, 1.3)
    m = np.array([[sx * math.cos(a), -math.sin(a) + shear, 0], [math.sin(a), math.cos(a), 0]], np.float32)
    m[:, 2] = np.array([w / 2, h / 2]) - m[:, :2] @ np.array([w / 2, h / 2])
    return cv2.warpAffine(c, m, (w, h), flags=cv2.INTER_LINEAR)


def _shaped(soft: np.ndarray) -> np.ndarray | None:
    if soft.max() < 0.3:
        return None
    image = to_mnist(soft)
    return image if image.any() else None


def make_marks(n: int, seed: int, fonts: list | None = None) -> np.ndarray:
    """n marks that are not digits, in MNIST's 28x28 form (uint8)."""
    rng = np.random.default_rng(seed)
    fonts = fonts if fonts is not None else HERSHEY + _ttf_fonts()
    out = []
    while len(out) < n:
        if rng.random() < SCRIBBLE_SHARE:
            soft = _scribble(rng)
            ys, xs = np.nonzero(soft > 0.3)
            if not len(ys) or min(np.ptp(ys), np.ptp(xs)) < SCRIBBLE_SPREAD * max(np.ptp(ys), np.ptp(xs)):
                continue  # a scribble as thin as a stroke could be a 1
        else:
            soft = _glyph(NOT_DIGITS[int(rng.integers(len(NOT_DIGITS)))], fonts[int(rng.integers(len(fonts)))], rng)
        image = _shaped(soft)
        if image is not None:
            out.append(image)
    return np.stack(out)


def make_font_digits(n: int, seed: int, fonts: list | None = None) -> tuple[np.ndarray, np.ndarray]:
    """n digits in typefaces (28x28 uint8) and their labels: printed digits are digits too."""
    rng = np.random.default_rng(seed)
    fonts = fonts if fonts is not None else HERSHEY + _ttf_fonts()
    out, labels = [], []
    while len(out) < n:
        d = int(rng.integers(10))
        image = _shaped(_glyph(str(d), fonts[int(rng.integers(len(fonts)))], rng))
        if image is not None:
            out.append(image)
            labels.append(d)
    return np.stack(out), np.array(labels)


def continental_ones(n: int, seed: int) -> np.ndarray:
    """1s as they are written in much of Europe: a long up-stroke to the top, then the stem down, some
    with a foot; MNIST has few of them, and without them they would look like marks (28x28 uint8)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        c = np.zeros((160, 160), np.uint8)
        top, bottom = np.array([90.0, 20.0]), np.array([90 + rng.uniform(-10, 10), 140.0])
        flag = top + np.array([-rng.uniform(20, 45), rng.uniform(25, 70)])
        pts = [flag, top, bottom]
        if rng.random() < 0.35:
            pts += [bottom + np.array([rng.uniform(15, 30), 0])]
            pts = [flag, top, bottom, bottom - np.array([rng.uniform(15, 30), 0])] + pts[3:]
        cv2.polylines(c, [np.array(pts, np.int32)], False, 255, int(rng.integers(4, 14)), cv2.LINE_AA)
        image = _shaped(_warp(c.astype(np.float32) / 255, rng))
        if image is not None:
            out.append(image)
    return np.stack(out)


def pen_zeros(n: int, seed: int) -> np.ndarray:
    """n zeros as a fast pen writes them (28x28 uint8, MNIST's form): ovals leaning right or upright,
    narrow or round, started near the top and closed short of it, on it or past it, some running on
    into a stroke towards the next digit."""
    rng = np.random.default_rng(seed)
    out = []
    size, b = 112, 40.0  # drawn on a 112-pixel canvas, 80 pixels high
    t = np.linspace(0, 1, 120)
    while len(out) < n:
        a = b * rng.uniform(0.4, 0.9)
        lean = math.tan(math.radians(rng.uniform(-8, 35)))  # columns move right this much per row up
        start = math.radians(-90 + rng.uniform(-50, 40))  # near the top ...
        sweep = math.radians(360 + rng.uniform(-45, 70))  # ... once round, counterclockwise on the page
        shrink = rng.uniform(0.8, 1.08)  # the loop ends inside or outside where it started
        k, phase, wobble = int(rng.integers(2, 4)), rng.uniform(0, 2 * math.pi), rng.uniform(0, 0.07)
        angle = start - sweep * t
        r = (1 + (shrink - 1) * t) * (1 + wobble * np.sin(k * angle + phase))
        ex, ey = a * r * np.cos(angle), b * r * np.sin(angle)
        path = np.stack([size / 2 + ex - ey * lean, size / 2 + ey], 1)
        if rng.random() < 0.35:  # the pen runs on to the right, towards the next digit
            length = rng.uniform(0.2, 0.6) * b
            step = np.array([1.0, rng.uniform(-0.6, 0.3)]) * length
            path = np.concatenate([path, path[-1] + np.linspace(0, 1, 12)[:, None] * step])
        canvas = np.zeros((size, size), np.float32)
        cv2.polylines(canvas, [np.round(path * 4).astype(np.int32)], False, 1.0, int(rng.integers(7, 16)),
                      cv2.LINE_AA, shift=2)
        image = to_mnist(canvas)
        if image.any():
            out.append(image)
    return np.stack(out)


def clutter(x, g):
    """What cutting a digit out of a real page leaves around it, put on digits and marks alike so that it
    tells neither: a rule under or through it, a neighbour's stroke at a side, specks."""
    import torch

    b = x.shape[0]
    x = x.clone()
    rows = torch.arange(28, device=x.device).view(1, 28, 1)
    cols = torch.arange(28, device=x.device).view(1, 1, 28)
    # A rule: a near-horizontal band of 1-2 pixels at a random height.
    ruled = torch.rand(b, generator=g) < CLUTTER_SHARE
    y = torch.randint(4, 27, (b, 1, 1), generator=g)
    slope = (torch.rand(b, 1, 1, generator=g) - 0.5) * 0.2
    band = ((rows - y - slope * (cols - 14)).abs() < torch.rand(b, 1, 1, generator=g) + 0.5).float()
    x[ruled, 0] = torch.maximum(x[ruled, 0], band[ruled] * torch.rand(int(ruled.sum()), 1, 1, generator=g).add(0.4).clamp(max=1))
    # A neighbour's edge: another image of the batch, shifted so that only its side shows.
    near = torch.rand(b, generator=g) < CLUTTER_SHARE
    other = x[torch.randperm(b, generator=g)]
    shift = int(torch.randint(16, 22, (1,), generator=g)) * (1 if torch.rand(1, generator=g) < 0.5 else -1)
    x[near] = torch.maximum(x[near], torch.roll(other[near], shift, dims=3) * (cols.view(1, 1, 1, 28) < 4).logical_or(cols.view(1, 1, 1, 28) > 23))
    # Specks of a printed background.
    specked = torch.rand(b, generator=g) < CLUTTER_SHARE
    specks = (torch.rand(b, 1, 28, 28, generator=g) < 0.01).float() * torch.rand(b, 1, 1, 1, generator=g)
    x[specked] = torch.maximum(x[specked], specks[specked])
    return x


def build_model():
    import torch.nn as nn
    return nn.Sequential(
        nn.Conv2d(1, 24, 3, padding=1), nn.BatchNorm2d(24), nn.ReLU(),
        nn.Conv2d(24, 24, 3, padding=1), nn.BatchNorm2d(24), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(24, 48, 3, padding=1), nn.BatchNorm2d(48), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(48, 96, 3, padding=1), nn.BatchNorm2d(96), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(96 * 3 * 3, 96), nn.ReLU(), nn.Dropout(0.3), nn.Linear(96, 1))


def train(out: Path, steps: int, threads: int, seed: int = 0, batch: int = 128, log=print) -> dict:
    import torch
    import torch.nn.functional as F

    from digitrec.augment import augment_batch
    from digitrec.data import atomic_write_bytes, load_mnist
    from digitrec.optim import AdamW

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    mnist = load_mnist()
    digits = mnist.train_images[:TRAIN_DIGITS]
    printed, _ = make_font_digits(8000, seed + 1)
    ones = continental_ones(3000, seed + 3)
    marks = make_marks(30000, seed + 2)
    log(f"made {len(marks)} marks and {len(printed)} printed digits in {time.perf_counter() - t0:.0f} s")
    pos = torch.from_numpy(np.concatenate([digits, printed, ones])).float().div(255)[:, None]
    neg = torch.from_numpy(marks).float().div(255)[:, None]
    model = build_model()
    opt = AdamW([{"params": list(model.parameters()), "weight_decay": 1e-4}], lr=2e-3)
    g = torch.Generator().manual_seed(seed)
    half = batch // 2
    for step in range(steps):
        lr = 2e-3 * 0.5 * (1 + math.cos(math.pi * step / steps))
        for group in opt.param_groups:
            group["lr"] = lr
        x = torch.cat([pos[torch.randint(len(pos), (half,), generator=g)], neg[torch.randint(len(neg), (half,), generator=g)]])
        x = clutter(augment_batch(x, g), g)
        y = torch.cat([torch.ones(half), torch.zeros(half)])
        loss = F.binary_cross_entropy_with_logits(model(x)[:, 0], y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 200 == 0 or step == steps - 1:
            log(f"step {step}/{steps} loss {loss.item():.4f} ({time.perf_counter() - t0:.0f} s)")
    model.eval()
    facts = measure(lambda x: _torch_p(model, x), mnist)
    facts.update(steps=steps, batch=batch, seconds=round(time.perf_counter() - t0),
                 trained_on=f"MNIST training digits 0-{TRAIN_DIGITS - 1}, 8000 printed digits, 3000 drawn continental 1s and 30000 marks "
                            f"({NOT_DIGITS} and scribbles) drawn with Hershey and DejaVu fonts")
    from safetensors.torch import save

    atomic_write_bytes(out / "marks.safetensors", save({k: v.contiguous() for k, v in model.state_dict().items()}))
    atomic_write_bytes(out / "marks.json", json.dumps(facts, indent=1).encode())
    log(json.dumps(facts, indent=1))
    return facts


def _torch_p(model, images: np.ndarray) -> np.ndarray:
    import torch
    with torch.no_grad():
        x = torch.from_numpy(np.asarray(images)).float().div(255)[:, None]
        return torch.sigmoid(model(x)[:, 0]).numpy()


def measure(p, mnist) -> dict:
    """How often digits are wrongly left out and marks wrongly kept, on data the training did not see."""
    held = mnist.train_images[TRAIN_DIGITS:]
    test_marks = make_marks(2000, 99, fonts=[HELD_OUT_FONT])
    test_printed, _ = make_font_digits(1000, 98, fonts=[HELD_OUT_FONT])
    return {"mnist_held_out_digits_left_out": float((p(held) < MARK_LEVEL).mean()),
            "mnist_test_digits_left_out": float((p(mnist.test_images) < MARK_LEVEL).mean()),
            "unseen_font_digits_left_out": float((p(test_printed) < MARK_LEVEL).mean()),
            "unseen_font_marks_kept": float((p(test_marks) >= MARK_LEVEL).mean())}


def export(run: Path, dest: Path = WEIGHTS) -> Path:
    import io
    import warnings

    import torch

    from digitrec.data import atomic_write_bytes
    model = build_model()
    from safetensors.torch import load_file

    model.load_state_dict(load_file(run / "marks.safetensors"))
    model.eval()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation, as in export.py
        torch.onnx.export(model, (torch.zeros(1, 1, 28, 28),), buf, dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["logit"], dynamic_axes={"x": {0: "n"}, "logit": {0: "n"}})
    atomic_write_bytes(dest, buf.getvalue())
    facts = json.loads((run / "marks.json").read_text())
    atomic_write_bytes(dest.with_suffix(".json"), json.dumps(facts, indent=1).encode())
    return dest


@lru_cache(maxsize=1)
def _session():
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(WEIGHTS), options, providers=["CPUExecutionProvider"])


def digit_probability(images: np.ndarray) -> np.ndarray:
    """How likely each 28x28 uint8 input (white on black, MNIST's form) is a digit at all, 0-1.

    >>> digit_probability(np.zeros((1, 28, 28), np.uint8)).shape
    (1,)
    """
    images = np.asarray(images, np.uint8)
    if not len(images):
        return np.zeros(0, np.float32)
    x = images[:, None].astype(np.float32) / 255
    logit = _session().run(None, {"x": x})[0][:, 0]
    return (1 / (1 + np.exp(-logit))).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m digitrec.marks", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train the digit-or-not network")
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--steps", type=int, default=3000)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--seed", type=int, default=0)
    e = sub.add_parser("export", help="write the trained network as the bundled ONNX file")
    e.add_argument("run", type=Path)
    e.add_argument("--dest", type=Path, default=WEIGHTS)
    args = ap.parse_args(argv)
    if args.command == "train":
        if not 1 <= args.steps <= 1_000_000 or not 1 <= args.threads <= 256:
            ap.error("--steps must be 1-1000000 and --threads 1-256")
        train(args.out, args.steps, args.threads, args.seed)
    else:
        if not (args.run / "marks.safetensors").is_file():
            print(f"python -m digitrec.marks: {args.run}: no marks.safetensors (train first)", file=sys.stderr)
            return 2
        print(export(args.run, args.dest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
