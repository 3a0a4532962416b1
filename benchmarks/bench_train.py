"""Training benchmark: accuracy and time of each model's recipe, median over seeds.

    python benchmarks/bench_train.py                       # fast, baseline, accurate; seeds 0 1 2
    python benchmarks/bench_train.py --models fast --seeds 0 1 2 3 4

Each run is a separate `digitrec train` process, timed from start to exit, so the table shows what a
user waits for. Needs MNIST (--data-dir or $DIGITREC_DATA). Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGETS = {  # model: (test accuracy at least, training seconds at most, whole process seconds at most)
    "fast": (0.990, 5.0, 10.0),
    "accurate": (0.997, 600.0, None),
    "baseline": (0.991, None, None),
}


def train_once(model: str, seed: int, out: Path, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "digitrec.cli", "train", "--model", model, "--seed", str(seed),
           "--out", str(out), "--no-report", *extra]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{r.stderr}")
    m = json.loads((out / "metrics.json").read_text())
    return {"acc": m["test_accuracy"], "train_s": m["train_seconds"], "wall_s": wall}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["fast", "baseline", "accurate"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--data-dir", help="MNIST folder (default: $DIGITREC_DATA)")
    p.add_argument("--threads", type=int, help="CPU threads per run")
    args = p.parse_args()
    extra = (["--data-dir", args.data_dir] if args.data_dir else []) + \
            (["--threads", str(args.threads)] if args.threads else [])

    print("| model | seeds | test accuracy (median) | min-max | training s (median) | process s (median) | target |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            runs = [train_once(model, s, Path(tmp) / f"{model}-{s}", extra) for s in args.seeds]
            acc = [r["acc"] for r in runs]
            med = {k: statistics.median(r[k] for r in runs) for k in ("acc", "train_s", "wall_s")}
            goal_acc, goal_train, goal_wall = TARGETS.get(model, (None, None, None))
            goals = [f">= {goal_acc:.1%}" if goal_acc else "", f"train <= {goal_train:g} s" if goal_train else "",
                     f"process <= {goal_wall:g} s" if goal_wall else ""]
            met = ((goal_acc is None or med["acc"] >= goal_acc) and (goal_train is None or med["train_s"] <= goal_train)
                   and (goal_wall is None or med["wall_s"] <= goal_wall))
            print(f"| {model} | {len(runs)} | {med['acc']:.2%} | {min(acc):.2%}-{max(acc):.2%} | {med['train_s']:.1f} "
                  f"| {med['wall_s']:.1f} | {', '.join(g for g in goals if g)}: {'met' if met else 'NOT met'} |",
                  flush=True)


if __name__ == "__main__":
    main()
