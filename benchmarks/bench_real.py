"""How well and how fast real documents are read: every set in ../shared/realdigits, plus numbers of
touching digits made from MNIST *training* digits 50000-59999 (held out from the string model's
training), and pictures of one mark that is no digit (a letter, a sign or a scribble in a hand no
reader learned from), which are right when nothing is read.

For each set: exact match of the whole text, per-digit accuracy where the length read is right, how
often nothing was read, and the median read time per picture. `--sheets DIR` writes PNG contact
sheets of the pictures read wrong (the picture, the boxes read, the text read and the truth).

    DIGITREC_DATA=../shared/mnist nice -n 5 python benchmarks/bench_real.py [--model RUN_DIR] [--touching N] [--sheets DIR]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np

from digitrec import optdigits
from digitrec.data import load_mnist
from digitrec.images import load_image
from digitrec.recognize import Recognizer, draw_reading, load
from digitrec.synth import Style, _photograph

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "realdigits"
HELD_OUT_FROM = 50_000  # training digits from here on are never learned from by the readers
TOUCH_OVERLAP = (0.0, 0.12)  # beyond first contact, neighbours overlap by this fraction of the digit height
TOUCH_SCALE = (2.0, 5.0)  # digits are drawn this many times MNIST's size


def touching_number(images: np.ndarray, labels: np.ndarray, rng: np.random.Generator, n: int) -> tuple[np.ndarray, str]:
    """A photo of n MNIST digits written so that each touches or overlaps the next one."""
    scale = float(rng.uniform(*TOUCH_SCALE))
    idx = rng.integers(0, len(images), n)
    glyphs = []
    for i in idx:
        d = images[i]
        ys, xs = np.nonzero(d)
        crop = d[ys.min():ys.max() + 1, xs.min():xs.max() + 1].astype(np.float32) / 255
        size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
        glyphs.append(np.clip(cv2.resize(np.pad(crop, 1), size, interpolation=cv2.INTER_CUBIC), 0, 1))
    h = max(g.shape[0] for g in glyphs)
    width = sum(g.shape[1] for g in glyphs) + 4 * h
    canvas = np.zeros((h + 2 * h, width), np.float32)
    x = h
    prev = None  # ink mask of what is already written
    for g in glyphs:
        top = h + (h - g.shape[0]) // 2 + int(rng.integers(-h // 12, h // 12 + 1))
        if prev is None:
            pos = x
        else:
            # Slide the digit left from clear of the others until its ink meets theirs, then overlap a bit more.
            pos = int(prev.nonzero()[1].max()) + 1
            gm = g > 0.35
            while pos > 0:
                region = prev[top:top + g.shape[0], pos:pos + g.shape[1]]
                if (region & gm[:, :region.shape[1]]).any():
                    break
                pos -= 1
            pos -= int(rng.uniform(*TOUCH_OVERLAP) * h)
            pos = max(pos, 0)
        region = canvas[top:top + g.shape[0], pos:pos + g.shape[1]]
        np.maximum(region, g[:, :region.shape[1]], out=region)
        prev = canvas > 0.35
    ys, xs = np.nonzero(canvas > 0.05)
    m = h // 2
    canvas = canvas[max(0, ys.min() - m):ys.max() + m, max(0, xs.min() - m):xs.max() + m]
    style = Style(scale=scale, light=float(rng.uniform(0, 0.4)), noise=float(rng.uniform(0, 6)),
                  jpeg=int(rng.integers(60, 96)), blue_ink=bool(rng.random() < 0.3))
    return _photograph(canvas, style, rng), "".join(str(int(labels[i])) for i in idx)


def lone_mark(rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """A photo of one letter, sign or scribble that is no digit, in a hand the reader never learned from."""
    from digitrec.marks import HELD_OUT_FONT, NOT_DIGITS, _glyph, _scribble

    soft = _scribble(rng) if rng.random() < 0.25 else _glyph(NOT_DIGITS[int(rng.integers(len(NOT_DIGITS)))],
                                                              HELD_OUT_FONT, rng)
    ys, xs = np.nonzero(soft > 0.05)
    m = 20
    soft = soft[max(0, ys.min() - m):ys.max() + m, max(0, xs.min() - m):xs.max() + m]
    style = Style(scale=float(rng.uniform(1, 3)), light=float(rng.uniform(0, 0.4)), noise=float(rng.uniform(0, 6)),
                  jpeg=int(rng.integers(60, 96)), blue_ink=bool(rng.random() < 0.3))
    return _photograph(soft, style, rng), ""


def kept_out(name: str) -> bool:
    """Whether optdigits picture tra/NNNN.png (the file's digit NNNN) is by the writers `--extra optdigits` keeps out."""
    return int(Path(name).stem) >= optdigits.FIRST_HELD_OUT


def real_sets() -> dict[str, list[tuple[object, str]]]:
    sets = {}
    for name, folder, keep in (("checks", "checks", lambda k: True),
                               ("photos of single digits", "photos", lambda k: k.startswith("photo/")),
                               ("sheets and drawn digits", "photos", lambda k: not k.startswith("photo/")),
                               ("optdigits, writers never trained on", "optdigits", lambda k: kept_out(k)),
                               ("optdigits, writers `--extra optdigits` trains on", "optdigits", lambda k: not kept_out(k))):
        labels = json.loads((REAL / folder / "labels.json").read_text())
        sets[name] = [(REAL / folder / k, v) for k, v in sorted(labels.items()) if keep(k)]
    return sets


def score(rec: Recognizer, items, limit: int | None = None) -> dict:
    exact = right = total = empty = 0
    times, wrong = [], []
    for source, truth in items[:limit]:
        picture = load_image(source)
        t = time.perf_counter()
        reading = rec.read(picture.pixels)
        times.append(time.perf_counter() - t)
        text = reading.text
        exact += text == truth
        empty += text == ""
        a, b = text.replace("\n", ""), truth.replace("\n", "")
        if len(a) == len(b):
            right += sum(x == y for x, y in zip(a, b))
            total += len(b)
        if text != truth:
            wrong.append((picture.pixels, reading, truth, source))
    n = len(items[:limit])
    return {"n": n, "exact": exact / n, "digits": right / max(total, 1), "empty": empty / n,
            "ms": 1000 * float(np.median(times)), "wrong": wrong}


def sheet(wrong, path: Path, cell: int = 240) -> None:
    """A contact sheet of pictures read wrong: the boxes read, the text read (red) and the truth."""
    tiles = []
    for pixels, reading, truth, source in wrong:
        img = draw_reading(pixels, reading)
        f = min(cell / img.shape[1], (cell - 30) / img.shape[0])
        img = cv2.resize(img, (max(1, round(img.shape[1] * f)), max(1, round(img.shape[0] * f))), interpolation=cv2.INTER_AREA)
        tile = np.full((cell, cell, 3), 255, np.uint8)
        tile[:img.shape[0], :img.shape[1]] = img
        label = f"{reading.text.replace(chr(10), '/') or '-'} vs {truth.replace(chr(10), '/')}"
        cv2.putText(tile, label, (2, cell - 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (200, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(tile, Path(str(source)).name[-16:], (2, cell - 3), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1)
        tiles.append(tile)
    cols = 6
    for start in range(0, len(tiles), 36):
        page = tiles[start:start + 36]
        page += [np.full((cell, cell, 3), 200, np.uint8)] * (-len(page) % cols)
        rows = [np.hstack(page[i:i + cols]) for i in range(0, len(page), cols)]
        out = path.with_name(f"{path.stem}-{start // 36}.png")
        cv2.imwrite(str(out), np.vstack(rows)[:, :, ::-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="run directory (default: the bundled model)")
    p.add_argument("--backend", choices=["auto", "onnx", "torch"], default="auto", help="as for digitrec predict")
    p.add_argument("--touching", type=int, default=300, help="synthetic numbers of 2-5 touching digits")
    p.add_argument("--marks", type=int, default=200, help="pictures of one letter, sign or scribble (right: nothing read)")
    p.add_argument("--sets", help="comma-separated names to run (default: all); e.g. checks,touching")
    p.add_argument("--limit", type=int, help="read at most this many pictures per set")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sheets", type=Path, help="write PNG sheets of the pictures read wrong into this folder")
    p.add_argument("--data-dir", help="MNIST folder (default: $DIGITREC_DATA, else the user cache)")
    args = p.parse_args()

    rec = load(args.model, backend=args.backend, threads=1)
    sets = real_sets()
    if args.touching:
        mnist = load_mnist(args.data_dir)
        rng = np.random.default_rng(args.seed)
        # Digits 50,000 on of the training set: the string reader learned from the others.
        held = slice(HELD_OUT_FROM, None)
        sets["touching digits (MNIST training)"] = [
            touching_number(mnist.train_images[held], mnist.train_labels[held], rng, int(rng.integers(2, 6)))
            for _ in range(args.touching)]
    if args.marks:
        rng = np.random.default_rng(args.seed)
        sets["lone letters, signs and scribbles (read as nothing)"] = [lone_mark(rng) for _ in range(args.marks)]
    if args.sets:
        wanted = args.sets.split(",")
        sets = {k: v for k, v in sets.items() if any(k.startswith(w) for w in wanted)}
    print(f"model `{rec.meta.get('architecture', '?')}` from {args.model or 'the bundled weights'} "
          f"({type(rec.logits).__name__}, 1 thread)\n")
    print("| set | pictures | exact | per digit (length right) | nothing read | read time (median) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, items in sets.items():
        s = score(rec, items, args.limit)
        print(f"| {name} | {s['n']} | {s['exact']:.1%} | {s['digits']:.1%} | {s['empty']:.1%} | {s['ms']:.1f} ms |",
              flush=True)
        if args.sheets and s["wrong"]:
            args.sheets.mkdir(parents=True, exist_ok=True)
            sheet(s["wrong"], args.sheets / name.split()[0])


if __name__ == "__main__":
    main()
