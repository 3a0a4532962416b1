"""How well the string model reads touching digits, and what it does for the whole reader.

1. Held-out synthetic strings (1-6 digits) made from MNIST training digits 50000-59999, which the
   string model never trains on, read through `strings.read` as a piece's soft ink.
2. bench_real's touching numbers (2-5 digits, from the same held-out digits): each piece of ink
   found in the photo cut out as the reader sees it (its soft ink) and read by the string model.
3. The same photos read by the whole reader: touching digits cut by the classifier (without the
   string model), or read by the string model with the digits' labels taken from the classifier's
   re-reading of each cut span, from the string model, or from both.

    DIGITREC_DATA=../shared/mnist nice -n 5 python benchmarks/bench_strings.py [--model strings.onnx] [--n 500]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from digitrec import recognize, segment, strings
from digitrec.data import load_mnist
from digitrec.images import to_gray
from digitrec.ink import MASK_LEVEL, WORK_MAX_SIDE, _erase_rules, find_ink
from digitrec.recognize import load

sys.path.insert(0, str(Path(__file__).parent))
from bench_real import touching_number  # noqa: E402


def pieces_soft(pixels: np.ndarray) -> list[np.ndarray]:
    """The soft ink of each piece the reader keeps in a picture, left to right (one line of writing)."""
    gray = to_gray(pixels)
    h, w = gray.shape
    scale = min(1.0, WORK_MAX_SIDE / max(h, w))
    if scale < 1:
        gray = cv2.resize(gray, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    ink = find_ink(gray)
    cut = max(ink.threshold, MASK_LEVEL * ink.level)
    _erase_rules(ink.strength, cut)
    labels, blobs = segment._pieces((ink.strength > cut).astype(np.uint8))
    blobs = [b for b in segment._join(blobs) if segment._not_digit(b, ink, labels, True, len(blobs) == 1) is None]
    return [segment._soft_ink(ink, labels, b)[0] for b in sorted(blobs, key=lambda b: b.x0)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, help=f"string model ONNX file (default: the bundled {strings.ONNX_NAME})")
    p.add_argument("--n", type=int, default=500, help="pictures per set")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-reader", action="store_true", help="only the string model's own sets (1, 2)")
    args = p.parse_args()
    if args.model:
        strings.WEIGHTS_DIR, strings.ONNX_NAME = args.model.parent, args.model.name
    mnist = load_mnist()
    lo, hi = strings.HELD_OUT
    images, labels = mnist.train_images[lo:hi], mnist.train_labels[lo:hi]

    maker = strings.StringMaker(images, labels, seed=1 + args.seed)
    by_len: dict[int, list[bool]] = {}
    times = []
    x, lab, ln = maker.batch(args.n)
    for soft, want, n in zip(x[:, 0].numpy(), lab.numpy(), ln.numpy()):
        t = time.perf_counter()
        got = [d for d, *_ in strings.read(soft)]
        times.append(time.perf_counter() - t)
        by_len.setdefault(int(n), []).append(got == list(want[:n]))
    print("| held-out synthetic strings | " + " | ".join(f"{k} digits" for k in sorted(by_len)) + " | all 2-5 | all |")
    print("| --- |" + " --- |" * (len(by_len) + 2))
    two_five = [r for k, v in by_len.items() if 2 <= k <= 5 for r in v]
    every = [r for v in by_len.values() for r in v]
    print("| exact | " + " | ".join(f"{np.mean(by_len[k]):.1%}" for k in sorted(by_len))
          + f" | {np.mean(two_five):.1%} | {np.mean(every):.1%} |")
    print(f"\nread time per piece (32 x {x.shape[3]} at most): median {1000 * np.median(times):.2f} ms\n")

    rng = np.random.default_rng(args.seed)
    photos = [touching_number(images, labels, rng, int(rng.integers(2, 6))) for _ in range(args.n)]
    right, times = 0, []
    for pixels, truth in photos:
        softs = pieces_soft(pixels)
        t = time.perf_counter()
        text = "".join(str(d) for s in softs for d, *_ in strings.read(s))
        times.append(time.perf_counter() - t)
        right += text == truth
    print(f"touching numbers, pieces read by the string model: {right / len(photos):.1%} exact "
          f"({len(photos)} photos; {1000 * np.median(times):.2f} ms per photo's pieces, median)\n")
    if args.skip_reader:
        return

    rec = load("bundled", backend="onnx", threads=1)
    available = strings.available
    variants = [("cut by the classifier (no string model)", None),
                ("string model, labels by the classifier", 0.0),
                ("string model, labels by both", 0.5),
                ("string model, labels by the string model", 1.0)]
    print("| touching numbers, whole reader | exact | read time (median) |")
    print("| --- | --- | --- |")
    for name, weight in variants:
        strings.available = (lambda: False) if weight is None else available
        recognize.STRING_WEIGHT = weight if weight is not None else 0.5
        right, times = 0, []
        for pixels, truth in photos:
            t = time.perf_counter()
            text = rec.read(pixels).text
            times.append(time.perf_counter() - t)
            right += text == truth
        print(f"| {name} | {right / len(photos):.1%} | {1000 * np.median(times):.1f} ms |", flush=True)
    strings.available = available


if __name__ == "__main__":
    main()
