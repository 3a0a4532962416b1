"""How well models read writers other than MNIST's, side by side: MNIST test digits, then every
other-writer set in ../shared/realdigits, each read through the whole reader (`digitrec.load(model).read`).

Rows: MNIST test (the 10,000 digits, classified as they are), optdigits (UCI, 30 writers on preprinted
forms: the last third of the file, by writers `--extra optdigits` never trains on, then the rest),
phone photos of single digits (14 writers), and the digits of bank checks where the number of digits
read is right (a wrong length leaves no digit to compare); under each, the 1s and 7s alone,
which writers outside MNIST's population write differently (a 1 with a long up-stroke or a foot, a
crossed 7). A picture read as anything but its one digit is wrong.

    DIGITREC_HOME=/tmp/nohome DIGITREC_DATA=../shared/mnist nice -n 5 python benchmarks/bench_writers.py \\
        [--model RUN_DIR ...] [--limit N] [--backend auto|onnx|torch]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from digitrec import optdigits
from digitrec.data import load_mnist
from digitrec.recognize import Recognizer, load

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "realdigits"
WATCHED = ("1", "7")  # digits whose accuracy gets rows of their own


def pictures(folder: str, keep=lambda name: True, limit: int | None = None) -> list[tuple[Path, str]]:
    labels = json.loads((REAL / folder / "labels.json").read_text())
    return [(REAL / folder / k, v) for k, v in sorted(labels.items()) if keep(k)][:limit]


def tally(pairs: list[tuple[str, str]]) -> dict[str, tuple[int, int]]:
    """(right, of) for all digits and for each watched digit, from (read, truth) pairs of single digits."""
    out = {"all": (sum(r == t for r, t in pairs), len(pairs))}
    for d in WATCHED:
        mine = [(r, t) for r, t in pairs if t == d]
        out[d] = (sum(r == t for r, t in mine), len(mine))
    return out


def mnist_test(rec: Recognizer, data_dir: str | None) -> dict:
    mnist = load_mnist(data_dir)
    read = rec.classify(mnist.test_images).argmax(1)
    return tally([(str(r), str(t)) for r, t in zip(read, mnist.test_labels)])


def single_digits(rec: Recognizer, items: list[tuple[Path, str]]) -> dict:
    return tally([(rec.read(path).text, truth) for path, truth in items])


def check_digits(rec: Recognizer, items: list[tuple[Path, str]]) -> dict:
    """Digit by digit, on the checks whose number of digits was read right."""
    pairs, length_right = [], 0
    for path, truth in items:
        text = rec.read(path).text.replace("\n", "")
        if len(text) == len(truth):
            length_right += 1
            pairs += list(zip(text, truth))
    return {**tally(pairs), "pictures": (length_right, len(items))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", metavar="RUN_DIR",
                   help="a run directory, bundled or personal; repeat to compare (default: bundled)")
    p.add_argument("--backend", choices=["auto", "onnx", "torch"], default="auto", help="as for digitrec predict")
    p.add_argument("--limit", type=int, help="read at most this many pictures per set (quicker, noisier)")
    p.add_argument("--data-dir", help="MNIST folder (default: $DIGITREC_DATA, else the user cache)")
    args = p.parse_args()
    models = args.model or ["bundled"]

    # Pictures tra/NNNN.png are the file's digits in its order: `--extra optdigits` trains on those before FIRST_HELD_OUT.
    kept_out = lambda k: int(Path(k).stem) >= optdigits.FIRST_HELD_OUT  # noqa: E731
    sets = {
        "optdigits, writers never trained on": lambda rec: single_digits(rec, pictures("optdigits", kept_out, args.limit)),
        "optdigits, writers `--extra optdigits` trains on": lambda rec: single_digits(
            rec, pictures("optdigits", lambda k: not kept_out(k), args.limit)),
        "photos of single digits": lambda rec: single_digits(
            rec, pictures("photos", lambda k: k.startswith("photo/"), args.limit)),
        "check digits (length right)": lambda rec: check_digits(rec, pictures("checks", limit=args.limit)),
    }
    results: dict[str, list[dict]] = {"MNIST test": [], **{name: [] for name in sets}}
    seconds = []
    for model in models:
        rec = load(model, backend=args.backend, threads=1)
        t = time.perf_counter()
        results["MNIST test"].append(mnist_test(rec, args.data_dir))
        for name, score in sets.items():
            results[name].append(score(rec))
        seconds.append(time.perf_counter() - t)

    def cell(right_of: tuple[int, int]) -> str:
        right, of = right_of
        return f"{right / of:.2%} ({right}/{of})" if of else "-"

    print("| set | " + " | ".join(f"`{m}`" for m in models) + " |")
    print("| --- |" + " --- |" * len(models))
    for name, per_model in results.items():
        print(f"| {name} | " + " | ".join(cell(r["all"]) for r in per_model) + " |")
        for d in WATCHED:
            print(f"| &nbsp;&nbsp;{d}s | " + " | ".join(cell(r[d]) for r in per_model) + " |")
        if "pictures" in per_model[0]:
            print("| &nbsp;&nbsp;checks of the right length | " + " | ".join(cell(r["pictures"]) for r in per_model) + " |")
    print("\nseconds per model: " + ", ".join(f"{s:.0f}" for s in seconds))


if __name__ == "__main__":
    main()
