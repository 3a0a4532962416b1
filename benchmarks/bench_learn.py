"""Learning a writer's handwriting from corrections: errors on the writer's other digits, MNIST kept, fit time.

The writer is UCI optdigits (../shared/realdigits/optdigits: 30 people on preprinted forms, bitmaps
stretched to fill their box, continental 1s with a long flag), a style a model of MNIST alone misreads
most in its 1s. For each seed, 5 of their digits per label (drawn at random) are stored as corrected
samples (`learn add` on the pictures), `learn fit` runs with nothing held out, and the personal model
reads the writer's other digits and the 10,000 MNIST test digits. Prints a markdown table; the fit's
processor time (all threads together) is what a busy machine does not inflate.

The bundled model trained on the file's first two thirds (`--extra optdigits`), so by default only the
last third, by writers it never saw, is used; `--base` names another model to correct (one of MNIST
alone misreads these writers far more often), `--writers all` takes the whole file.

    DIGITREC_DATA=../shared/mnist nice -n 5 python benchmarks/bench_learn.py [--seeds 0 1 2] [--threads 2] \
        [--base RUN_DIR] [--writers kept-out|all]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

OPTDIGITS = Path(__file__).resolve().parents[1] / ".." / "shared" / "realdigits" / "optdigits"
PER_DIGIT = 5  # corrected samples of each digit given to the fit


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data", default=str(OPTDIGITS))
    ap.add_argument("--base", default="bundled", help="the model corrected: a run directory or bundled (default)")
    ap.add_argument("--writers", choices=["kept-out", "all"], default="kept-out",
                    help="the file's last third, which `--extra optdigits` never trains on (default), or all of it")
    args = ap.parse_args()
    os.environ["DIGITREC_HOME"] = tempfile.mkdtemp(prefix="bench-learn-")

    import torch

    from digitrec.checkpoint import load_checkpoint
    from digitrec.data import load_mnist
    from digitrec.evaluate import predict_logits
    from digitrec.learn import FitConfig, Sample, Store, fit
    from digitrec.optdigits import FIRST_HELD_OUT
    from digitrec.recognize import load

    torch.set_num_threads(args.threads)
    root = Path(args.data)
    labels = json.loads((root / "labels.json").read_text())
    bundled = load("bundled", backend="torch")
    x, y, source = [], [], []
    first = FIRST_HELD_OUT if args.writers == "kept-out" else 0
    for name, text in sorted(labels.items()):
        if int(Path(name).stem) < first:
            continue
        reading = bundled.read(root / name)
        if len(reading.digits) == 1:  # what `learn add --text` would store; other counts are refused
            x.append(reading.digits[0].image)
            y.append(int(text))
            source.append(name)
    x, y = np.stack(x), np.array(y)
    mnist = load_mnist()
    base_model, _ = load_checkpoint(args.base)
    base_other = predict_logits(base_model, x).argmax(1).numpy()
    base_mnist = float((predict_logits(base_model, mnist.test_images).argmax(1).numpy() == mnist.test_labels).mean())

    print(f"writer: optdigits ({args.writers}), {len(y)} digits read as one digit each; {args.base}: "
          f"{int((base_other != y).sum())} errors, MNIST test {base_mnist:.2%}\n")
    print("| seed | samples | errors on the other digits: base -> personal | cut | MNIST test: base -> personal | fit time | fit processor time |")
    print("|---|---|---|---|---|---|---|")
    for seed in args.seeds:
        rng = np.random.default_rng(seed)
        chosen = np.concatenate([rng.choice(np.flatnonzero(y == d), PER_DIGIT, replace=False) for d in range(10)])
        other = np.setdiff1d(np.arange(len(y)), chosen)
        store = Store()
        store.reset()
        store.add([Sample(int(y[i]), x[i], source[i], predicted=int(base_other[i])) for i in chosen])
        t0, c0 = time.perf_counter(), time.process_time()
        fit(store, FitConfig(base=args.base, holdout=False, seed=seed, threads=args.threads), log=lambda line: None)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        model, _ = load_checkpoint("personal")
        mine = predict_logits(model, x[other]).argmax(1).numpy()
        acc = float((predict_logits(model, mnist.test_images).argmax(1).numpy() == mnist.test_labels).mean())
        before, after = int((base_other[other] != y[other]).sum()), int((mine != y[other]).sum())
        cut = f"{1 - after / before:.0%}" if before else "-"
        print(f"| {seed} | {len(chosen)} | {before} -> {after} of {len(other)} | {cut} | "
              f"{base_mnist:.2%} -> {acc:.2%} | {seconds:.0f} s | {cpu:.0f} s |", flush=True)


if __name__ == "__main__":
    main()
