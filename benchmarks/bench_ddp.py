"""Training `fast` in 2 processes x 1 thread (DDP over gloo) against 1 process x 2 threads.

Same seed and global batch; runs alternate, and the table gives the training images/s (from
history.csv: the epoch's own time, start-up left out), the whole command's time and test accuracy.

    python benchmarks/bench_ddp.py --repeats 3
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRAIN_IMAGES = 55_000  # MNIST's training images less the 5,000 held out for validation


def one_run(out: Path, nproc: int, threads: int, seed: int) -> dict:
    cmd = [sys.executable, "-m", "digitrec", "train", "--model", "fast", "--seed", str(seed), "--threads",
           str(threads), "--out", str(out), "--no-report"] + (["--nproc", str(nproc)] if nproc > 1 else [])
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    seconds = sum(float(r["seconds"]) for r in csv.DictReader(open(out / "history.csv")))
    acc = json.loads((out / "metrics.json").read_text())["test_accuracy"]
    return {"img_s": TRAIN_IMAGES / seconds, "wall": wall, "acc": acc}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    setups = {"1 process x 2 threads": (1, 2), "2 processes x 1 thread": (2, 1)}
    results = {name: [] for name in setups}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            for name, (nproc, threads) in setups.items():
                results[name].append(one_run(Path(tmp) / f"{nproc}-{i}", nproc, threads, args.seed))
    base = statistics.median(r["img_s"] for r in results["1 process x 2 threads"])
    print(f"{'setup':<24} {'img/s':>7} {'ratio':>6} {'command s':>10} {'test acc':>9}   img/s of each run")
    for name, runs in results.items():
        img_s = statistics.median(r["img_s"] for r in runs)
        print(f"{name:<24} {img_s:>7.0f} {img_s / base:>5.2f}x {statistics.median(r['wall'] for r in runs):>10.1f} "
              f"{statistics.median(r['acc'] for r in runs):>9.2%}   " + " ".join(f"{r['img_s']:.0f}" for r in runs))


if __name__ == "__main__":
    main()
