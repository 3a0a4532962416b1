"""How much an ensemble gains over its members, by the number of members, on the MNIST test set.

    python benchmarks/bench_ensemble.py runs/deep-s0 runs/deep-s1 runs/deep-s2 runs/deep-s3

Every run reads the 10,000 test digits once (its calibrated probabilities); then every subset of the
runs (or --samples random ones per size, where there are more) votes as `digitrec ensemble` would,
by the mean of its members' probabilities. Prints markdown tables: accuracy by ensemble size, and for
all the runs together how the mistakes split between digits every member gets wrong and digits the
vote gets wrong although some member was right. Needs MNIST (--data-dir or $DIGITREC_DATA).
"""

from __future__ import annotations

import argparse
import itertools
import math

import numpy as np

from digitrec.data import load_mnist
from digitrec.recognize import load


def subsets(n: int, k: int, samples: int, rng: np.random.Generator) -> list[tuple[int, ...]]:
    """All k-subsets of range(n), or `samples` distinct random ones where there are more."""
    if math.comb(n, k) <= samples:
        return list(itertools.combinations(range(n), k))
    chosen: set[tuple[int, ...]] = set()
    while len(chosen) < samples:
        chosen.add(tuple(sorted(rng.choice(n, k, replace=False))))
    return sorted(chosen)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="run directories (two or more)")
    p.add_argument("--samples", type=int, default=100, help="random subsets per size where there are more")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data-dir", help="MNIST folder (default: $DIGITREC_DATA, else the user cache)")
    args = p.parse_args()
    if len(args.runs) < 2:
        p.error("give two or more run directories")

    mnist = load_mnist(args.data_dir)
    labels = mnist.test_labels
    probs = np.stack([load(run, backend="torch", threads=args.threads).classify(mnist.test_images)
                      for run in args.runs])  # (members, N, 10)
    right = probs.argmax(2) == labels  # (members, N)

    print(f"{len(args.runs)} runs on the {len(labels):,} MNIST test digits\n")
    print("| run | test accuracy | mistakes |\n| --- | --- | --- |")
    for run, r in zip(args.runs, right):
        print(f"| {run} | {r.mean():.2%} | {int((~r).sum())} |")

    rng = np.random.default_rng(0)
    print("\n| members | ensembles | accuracy, mean | lowest | highest |\n| --- | --- | --- | --- | --- |")
    for k in range(1, len(args.runs) + 1):
        accs = [float((probs[list(s)].mean(0).argmax(1) == labels).mean())
                for s in subsets(len(args.runs), k, args.samples, rng)]
        print(f"| {k} | {len(accs)} | {np.mean(accs):.2%} | {min(accs):.2%} | {max(accs):.2%} |")

    vote_right = probs.mean(0).argmax(1) == labels
    none_right = ~right.any(0)
    print("\n| all runs together | digits |\n| --- | --- |")
    print(f"| mistakes of the vote | {int((~vote_right).sum())} |")
    print(f"| ... on digits every run gets wrong | {int((~vote_right & none_right).sum())} |")
    print(f"| ... on digits some run gets right | {int((~vote_right & ~none_right).sum())} |")
    print(f"| digits the vote gets right although most runs are wrong | "
          f"{int((vote_right & (right.mean(0) < 0.5)).sum())} |")
    print(f"| best possible pick of a run per digit (oracle) | {1 - none_right.mean():.2%} |")


if __name__ == "__main__":
    main()
