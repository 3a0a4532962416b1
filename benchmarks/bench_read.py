"""How well and how fast digits are read in pictures, compared with the same model on raw MNIST.

Every MNIST *test* digit is written once into a realistic picture (digitrec.synth: dark ink on paper or
chalk on a board, 3-8x, uneven light, noise, blur, JPEG; numbers of 1-6 digits, some on two lines), then
read back with digitrec.recognize. Prints a markdown table.

    DIGITREC_DATA=../shared/mnist nice -n 5 python benchmarks/bench_read.py [--model RUN_DIR] [--images N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

from digitrec.data import load_mnist
from digitrec.recognize import Recognizer, load
from digitrec.synth import Style, compose, random_style

TWO_LINES = 0.3  # share of numbers of 2+ digits written on two lines
IOU_MATCH = 0.3  # a digit read counts for a true digit when their boxes overlap this much


def iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    ix = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = ix * iy
    return inter / (aw * ah + bw * bh - inter)


def numbers(labels: np.ndarray, rng: np.random.Generator, limit: int | None):
    """Split the test digits, in a random order, into numbers of 1-6 digits on one or two lines."""
    order = rng.permutation(len(labels))
    start = 0
    while start < len(order) and (limit is None or limit > 0):
        n = int(rng.integers(1, 7))
        idx = order[start:start + n]
        start += len(idx)
        if len(idx) >= 2 and rng.random() < TWO_LINES:
            cut = int(rng.integers(1, len(idx)))
            yield [idx[:cut], idx[cut:]]
        else:
            yield [idx]
        if limit is not None:
            limit -= 1


def score(rec: Recognizer, images: np.ndarray, labels: np.ndarray, seed: int, limit: int | None) -> dict:
    rng = np.random.default_rng(seed)
    used, right_raw = [], []
    raw_pred = rec.classify(images).argmax(1)
    digits_right = digits_total = extra = 0
    whole = defaultdict(lambda: [0, 0])  # key -> [right, total]
    for lines in numbers(labels, rng, limit):
        style = random_style(rng)
        sample = compose([[images[i] for i in ln] for ln in lines], [[labels[i] for i in ln] for ln in lines], style, rng)
        reading = rec.read(sample.image)
        flat = np.concatenate(lines)
        used.extend(flat)
        right_raw.extend(raw_pred[flat] == labels[flat])
        for box, label in zip(sample.boxes, sample.labels):
            best = max(reading.digits, key=lambda d: iou(d.box, box), default=None)
            digits_total += 1
            digits_right += best is not None and iou(best.box, box) >= IOU_MATCH and best.label == label
        extra += max(0, len(reading.digits) - len(sample.boxes))
        ok = reading.text == sample.text
        for key in ("all", f"{len(flat)} digits", "two lines" if len(lines) > 1 else "one line",
                    "dark on light" if style.dark_on_light else "light on dark"):
            whole[key][0] += ok
            whole[key][1] += 1
    return {"raw": float(np.mean(right_raw)), "digits": digits_right / digits_total, "n_digits": digits_total,
            "extra": extra, "whole": dict(whole)}


def timing(rec: Recognizer, images: np.ndarray, labels: np.ndarray, repeats: int) -> dict:
    """Median seconds (wall clock, and processor time of this process) to read a 1000x400 photo (as
    an array and as a JPEG file) and a 280x280 drawing. Processor time is what the read costs on an
    idle machine; wall time also counts waiting for cores that other programs hold."""
    rng = np.random.default_rng(1)
    photo = compose([list(images[:6])], [list(labels[:6])], Style(scale=4.0, light=0.4, noise=4, jpeg=85),
                    rng, size=(1000, 400)).image
    drawing = 255 - compose([[images[6]]], [[labels[6]]], Style(scale=7.0), rng, size=(280, 280)).image[:, :, 0]
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "photo.jpg"
        cv2.imwrite(str(path), photo[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
        for name, source in (("1000x400 photo, array", photo), ("1000x400 photo, JPEG file", path),
                             ("280x280 drawing, array", drawing)):
            rec.read(source)  # warm-up
            times = []
            for _ in range(repeats):
                t, c = time.perf_counter(), time.process_time()
                rec.read(source)
                times.append((time.perf_counter() - t, time.process_time() - c))
            out[name] = np.median(times, axis=0)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="run directory (default: the bundled model)")
    p.add_argument("--backend", choices=["auto", "onnx", "torch"], default="auto", help="as for digitrec predict")
    p.add_argument("--images", type=int, help="stop after this many pictures (default: all 10000 test digits)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=50, help="timed reads per picture")
    p.add_argument("--data-dir", help="MNIST folder (default: $DIGITREC_DATA, else the user cache)")
    args = p.parse_args()

    # As `digitrec predict` does: a few 28x28 digits per read gain nothing from parallel kernels.
    rec = load(args.model, backend=args.backend, threads=1)
    mnist = load_mnist(args.data_dir)
    images, labels = mnist.test_images, mnist.test_labels
    t0 = time.perf_counter()
    s = score(rec, images, labels, args.seed, args.images)
    elapsed = time.perf_counter() - t0
    speed = timing(rec, images, labels, args.repeats)

    arch = rec.meta.get("architecture", "?")
    print(f"model `{arch}` from {args.model or 'the bundled weights'} ({type(rec.logits).__name__}, 1 thread); "
          f"{s['n_digits']} MNIST test digits in {s['whole']['all'][1]} pictures (seed {args.seed}, {elapsed:.0f} s)\n")
    print("| measure | value |\n| --- | --- |")
    print(f"| per-digit accuracy, raw 28x28 MNIST digits | {s['raw']:.2%} |")
    print(f"| per-digit accuracy, read from the pictures | {s['digits']:.2%} |")
    print(f"| difference | {100 * (s['digits'] - s['raw']):+.2f} points |")
    print(f"| digits found where there were none | {s['extra']} |")
    keys = ["all"] + [f"{n} digits" for n in range(1, 7)] + ["one line", "two lines", "dark on light", "light on dark"]
    for key in keys:
        right, total = s["whole"].get(key, (0, 0))
        if total:
            print(f"| whole-number accuracy, {key} | {right / total:.2%} ({right}/{total}) |")
    for name, (wall, cpu) in speed.items():
        print(f"| read time, {name} (median of {args.repeats}) | {1000 * wall:.1f} ms ({1000 * cpu:.1f} ms processor) |")


if __name__ == "__main__":
    main()
