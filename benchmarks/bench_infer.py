"""Inference benchmark: PyTorch eager against ONNX Runtime, per model; a drawing read end to end; cold starts.

    python benchmarks/bench_infer.py                    # fast, accurate, the bundled ensemble; 2 threads
    python benchmarks/bench_infer.py --threads 1 --cold 9

Throughput is images/s at batch 1024, latency p50/p99 at batch 1 (the runtime's own threads capped at
--threads). `fast` and `accurate` run with fresh weights (speed does not depend on them), exported
here. The cold start is `digitrec predict one.png` timed from process start to exit, wall clock and
processor time of the process. Needs MNIST (--data-dir or $DIGITREC_DATA) for the pictures. Prints
markdown tables.
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
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from digitrec.checkpoint import BUNDLED_DIR, META, read_json, save_checkpoint
from digitrec.data import load_mnist
from digitrec.export import export_onnx, load_logits
from digitrec.models import create_model
from digitrec.recognize import Recognizer

TARGETS = {"fast": 20_000, "accurate": 5_000}  # images/s at batch 1024 on 2 cores
COLD_TARGET = 1.0  # seconds for `digitrec predict one.png`


def timed(fn, repeats: int) -> list[float]:
    fn()  # the first call sets up kernels and buffers
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def throughput(logits, x: np.ndarray, seconds: float) -> float:
    logits(x)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        logits(x)
        n += len(x)
    return n / (time.perf_counter() - t0)


def cold_start(args: list[str], repeats: int) -> tuple[float, float]:
    """Median wall seconds and median processor seconds of `python -m digitrec.cli ARGS`."""
    walls, cpus = [], []
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "digitrec.cli", *args], check=True, capture_output=True)
        walls.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(walls), statistics.median(cpus)


def drawing(images: np.ndarray) -> np.ndarray:
    """A 280x280 canvas, dark ink on white, with three MNIST digits written across it."""
    canvas = np.full((280, 280), 255, np.uint8)
    for i, img in enumerate(images[:3]):
        canvas[100:184, 8 + 90 * i:92 + 90 * i] = 255 - np.asarray(Image.fromarray(img).resize((84, 84)))
    return canvas


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2, help="runtime threads (default 2)")
    p.add_argument("--seconds", type=float, default=3.0, help="time spent measuring each throughput")
    p.add_argument("--latency-repeats", type=int, default=300)
    p.add_argument("--cold", type=int, default=5, help="cold starts per backend (median reported)")
    p.add_argument("--data-dir", help="MNIST folder (default: $DIGITREC_DATA)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    mnist = load_mnist(args.data_dir, download=False)
    batch = mnist.test_images[:1024, None].astype(np.float32) / 255  # (1024, 1, 28, 28)
    one = batch[:1]
    print(f"{os.cpu_count()} cores, {args.threads} threads, load average {os.getloadavg()[0]:.1f} at the start\n")

    with tempfile.TemporaryDirectory() as tmp:
        runs = {}
        for name in ("fast", "accurate"):
            runs[name] = Path(tmp) / name
            runs[name].mkdir()
            save_checkpoint(runs[name], create_model(name), {"architecture": name, "epoch": 0})
            export_onnx(runs[name])
        members = Counter(m["architecture"] for m in read_json(BUNDLED_DIR / META, "bundled model")["members"])
        runs[f"bundled ensemble ({', '.join(f'{n} {a}' for a, n in members.items())})"] = None

        print("| model | backend | images/s, batch 1024 | p50 ms, batch 1 | p99 ms, batch 1 | target |")
        print("| --- | --- | --- | --- | --- | --- |")
        for name, run_dir in runs.items():
            for backend in ("torch", "onnx"):
                logits, _ = load_logits(run_dir, backend, threads=args.threads)
                rate = throughput(logits, batch, args.seconds)
                lat = np.array(timed(lambda: logits(one), args.latency_repeats)) * 1e3
                goal = TARGETS.get(name)
                verdict = f">= {goal:,} images/s: {'met' if rate >= goal else 'NOT met'}" if goal else ""
                print(f"| {name} | {backend} | {rate:,.0f} | {np.percentile(lat, 50):.2f} | "
                      f"{np.percentile(lat, 99):.2f} | {verdict} |", flush=True)

        canvas = drawing(mnist.test_images)
        path = Path(tmp) / "one.png"
        Image.fromarray(canvas).save(path)
        print("\n| bundled model | read a 280x280 drawing, p50 ms | p99 ms | `digitrec predict one.png` cold, s (median) "
              "| processor s (median) | target |")
        print("| --- | --- | --- | --- | --- | --- |")
        for backend in ("torch", "onnx"):
            rec = Recognizer(*load_logits(None, backend, threads=1))
            assert rec.read(canvas).text == "".join(str(v) for v in mnist.test_labels[:3])
            lat = np.array(timed(lambda: rec.read(canvas), 100)) * 1e3
            wall, cpu = cold_start(["predict", "--backend", backend, str(path)], args.cold)
            print(f"| {backend} | {np.percentile(lat, 50):.1f} | {np.percentile(lat, 99):.1f} | {wall:.2f} | {cpu:.2f} "
                  f"| <= {COLD_TARGET:g} s: {'met' if wall <= COLD_TARGET else 'NOT met'} |", flush=True)
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
