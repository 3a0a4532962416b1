"""`digitrec predict --jobs N` against `--jobs 1` on a folder of synthetic phone photos.

Makes N photos of 1-6 handwritten digits from MNIST test digits (digitrec.synth), then times the
whole command (start-up included) with each --jobs value, alternating, and checks the outputs match.

    python benchmarks/bench_jobs.py --photos 1000 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from digitrec.data import load_mnist
from digitrec.synth import compose, random_style


def make_photos(folder: Path, n: int, seed: int = 0) -> None:
    mnist = load_mnist()
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        k = int(rng.integers(1, 7))
        pick = rng.integers(0, len(mnist.test_labels), size=k)
        sample = compose([[mnist.test_images[j] for j in pick]], [[int(mnist.test_labels[j]) for j in pick]],
                         random_style(rng), rng)
        cv2.imwrite(str(folder / f"photo-{i:05d}.jpg"), cv2.cvtColor(sample.image, cv2.COLOR_RGB2BGR))


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # the command and its workers, once they exit
    return usage.ru_utime + usage.ru_stime


def timed(folder: Path, jobs: int, out: Path) -> tuple[float, float]:
    """Wall and processor seconds of one whole command."""
    out.unlink(missing_ok=True)
    t0, c0 = time.perf_counter(), cpu_seconds()
    subprocess.run([sys.executable, "-m", "digitrec", "predict", str(folder), "--jobs", str(jobs), "--output", str(out)],
                   check=False, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0, cpu_seconds() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=1000)
    ap.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        make_photos(folder, args.photos)
        size = sum(f.stat().st_size for f in folder.iterdir()) / 1e6
        print(f"{args.photos} photos, {size:.0f} MB, {os.cpu_count()} cores")
        times = {j: [] for j in args.jobs}
        for _ in range(args.repeats):
            for j in args.jobs:
                times[j].append(timed(folder, j, Path(tmp) / f"out-{j}.jsonl"))
        outputs = {j: (Path(tmp) / f"out-{j}.jsonl").read_text() for j in args.jobs}
        same = len(set(outputs.values())) == 1
        base = statistics.median(t for t, _ in times[args.jobs[0]])
        # On a shared machine the wall time shows the CPU share the scheduler gave, not the speed-up;
        # processor seconds show the work, and so the speed-up that idle cores would give.
        print(f"{'--jobs':>6} {'median s':>9} {'photos/s':>9} {'speed-up':>9} {'cpu s':>6}   wall s of each run")
        for j in args.jobs:
            med = statistics.median(t for t, _ in times[j])
            cpu = statistics.median(c for _, c in times[j])
            print(f"{j:>6} {med:>9.2f} {args.photos / med:>9.1f} {base / med:>8.2f}x {cpu:>6.1f}   "
                  + " ".join(f"{t:.2f}" for t, _ in times[j]))
        print("outputs identical" if same else "OUTPUTS DIFFER")


if __name__ == "__main__":
    main()
