"""Training race: our recipes against the PyTorch examples and Keras example MNIST recipes, in one run.

    python benchmarks/bench_recipes.py                        # fast, accurate, keras, pytorch-examples
    python benchmarks/bench_recipes.py --max-seconds 300 --every 50

For each recipe: training seconds until the test accuracy first reaches 99.0% and 99.5%, the final
test accuracy and the training seconds in all. Every --every steps the model is tested on 2,000 test
images, and a threshold that subset passes is confirmed on all 10,000; the clock stops meanwhile. Our
recipes and Keras's (`baseline`) run through digitrec's own training loop; the PyTorch examples recipe
is written here from its published description. A recipe still training after --max-seconds is cut
off and shows "> N s". Needs MNIST (--data-dir or $DIGITREC_DATA). Prints markdown tables.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from digitrec import train as digitrec_train
from digitrec.data import load_mnist
from digitrec.evaluate import as_batch, predict_logits
from digitrec.models import Normalize, create_model

THRESHOLDS = (0.990, 0.995)
SUBSET = 2000
# A subset this far below a threshold cannot be hiding a pass on the full set (its standard error is ~0.2%).
CONFIRM_MARGIN = 0.004


class Cutoff(Exception):
    """Raised from inside a training loop when the recipe's time is up."""


class Probe:
    """Tests a model every `every` training steps, on a clock that stops while it tests.

    Called before each training forward pass (a forward pre-hook), so it works inside any training loop.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, every: int, max_seconds: float):
        self.images, self.labels = images, labels
        self.every, self.max_seconds = every, max_seconds
        self.steps, self.paused, self.t0 = 0, 0.0, None
        self.reached: dict[float, float] = {}  # threshold -> training seconds
        self.curve: list[tuple[int, float, float]] = []  # (step, seconds, subset accuracy)

    def seconds(self) -> float:
        return time.perf_counter() - self.t0 - self.paused if self.t0 else 0.0

    def accuracy(self, model: nn.Module, n: int | None = None) -> float:
        logits = predict_logits(model, self.images[:n])  # switches to eval mode and back
        return float((logits.argmax(1).numpy() == self.labels[:n]).mean())

    def __call__(self, model: nn.Module, inputs) -> None:
        if not model.training:
            return
        if self.t0 is None:
            self.t0 = time.perf_counter()
        self.steps += 1
        if self.steps % self.every:
            return
        pause = time.perf_counter()
        now = self.seconds()
        acc = self.accuracy(model, SUBSET)
        self.curve.append((self.steps, now, acc))
        for t in THRESHOLDS:
            if t not in self.reached and acc >= t - CONFIRM_MARGIN and self.accuracy(model) >= t:
                self.reached[t] = now
        self.paused += time.perf_counter() - pause
        if now > self.max_seconds:
            raise Cutoff


def run_digitrec(model_name: str, probe: Probe, data_dir: str | None, threads: int, out: Path) -> nn.Module:
    """Train a registered model with its recipe through digitrec's own loop, probed every few steps."""
    trained = {}

    def create(name):
        model = create_model(name)
        model.register_forward_pre_hook(probe)
        trained["model"] = model
        return model

    cfg = digitrec_train.TrainConfig.for_model(model_name, threads=threads, data_dir=data_dir)
    digitrec_train.create_model = create  # the loop builds its model through this name
    try:
        digitrec_train.run(cfg, out, log=lambda s: None, progress=False)
    except Cutoff:
        pass
    finally:
        digitrec_train.create_model = create_model
    return trained["model"]


class PytorchExamplesNet(nn.Module):
    """pytorch/examples mnist/main.py: conv32-conv64-maxpool-dropout-fc128-dropout-fc10."""

    def __init__(self):
        super().__init__()
        self.normalize = Normalize()  # their transforms.Normalize((0.1307,), (0.3081,))
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(64 * 12 * 12, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.relu(self.conv1(self.normalize(x)))  # (B, 32, 26, 26)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)  # (B, 64, 12, 12)
        x = F.relu(self.fc1(torch.flatten(self.dropout1(x), 1)))  # (B, 128)
        return F.log_softmax(self.fc2(self.dropout2(x)), 1)


def run_pytorch_examples(probe: Probe, mnist, seed: int = 1) -> nn.Module:
    """Adadelta lr 1.0, StepLR gamma 0.7 per epoch, batch 64, 14 epochs, all 60,000 training images."""
    torch.manual_seed(seed)
    model = PytorchExamplesNet()
    model.register_forward_pre_hook(probe)
    opt = torch.optim.Adadelta(model.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)
    images, labels = torch.from_numpy(mnist.train_images), torch.from_numpy(mnist.train_labels).long()
    try:
        for _ in range(14):
            model.train()
            for idx in torch.randperm(len(labels)).split(64):
                loss = F.nll_loss(model(as_batch(images[idx])), labels[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
            sched.step()
    except Cutoff:
        pass
    return model


def fmt(seconds: float | None, cut: float | None) -> str:
    """Training seconds to a threshold: "17.0 s", "> 120 s" (cut off before it) or "not reached"."""
    if seconds is not None:
        return f"{seconds:.1f} s"
    return f"> {cut:.0f} s" if cut is not None else "not reached"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipes", nargs="+", default=["fast", "accurate", "keras", "pytorch-examples"])
    p.add_argument("--max-seconds", type=float, default=240.0, help="training seconds per recipe at most")
    p.add_argument("--every", type=int, default=50, help="training steps between tests")
    # One thread: on a machine shared with other work, two threads wait on each other's spinning
    # (a `fast` epoch took 19 s on one thread and over 150 s on two, at a load average of 5).
    p.add_argument("--threads", type=int, default=1, help="torch threads per recipe (default 1)")
    p.add_argument("--data-dir", help="MNIST folder (default: $DIGITREC_DATA)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    mnist = load_mnist(args.data_dir, download=False)
    print(f"{os.cpu_count()} cores, {args.threads} threads, load average {os.getloadavg()[0]:.1f} at the start; "
          f"tested every {args.every} steps, at most {args.max_seconds:g} s of training per recipe\n")

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for recipe in args.recipes:
            probe = Probe(mnist.test_images, mnist.test_labels, args.every, args.max_seconds)
            if recipe == "pytorch-examples":
                model = run_pytorch_examples(probe, mnist)
            else:
                name = "baseline" if recipe == "keras" else recipe
                model = run_digitrec(name, probe, args.data_dir, args.threads, Path(tmp) / recipe)
            total = probe.seconds()
            cut = total if total > args.max_seconds else None
            results[recipe] = {"reached": probe.reached, "final": probe.accuracy(model), "total": total, "cut": cut}
            r = results[recipe]
            print(f"- {recipe}: " + ", ".join(f"{t:.1%} at {fmt(r['reached'].get(t), cut)}" for t in THRESHOLDS)
                  + f"; final {r['final']:.2%} after {total:.1f} s{' (cut off)' if cut else ''}", flush=True)

    print("\n| recipe | to 99.0% | to 99.5% | final test accuracy | training s | |")
    print("| --- | --- | --- | --- | --- | --- |")
    for recipe, r in results.items():
        print(f"| {recipe} | {fmt(r['reached'].get(0.990), r['cut'])} | {fmt(r['reached'].get(0.995), r['cut'])} "
              f"| {r['final']:.2%} | {r['total']:.1f} | {'cut off' if r['cut'] else 'complete'} |")

    ours = [k for k in results if k in ("fast", "accurate")]
    theirs = [k for k in results if k in ("keras", "pytorch-examples")]
    if ours and theirs:
        print("\n| ours vs theirs | 99.0% sooner by | 99.5% sooner by |")
        print("| --- | --- | --- |")
        for a in ours:
            for b in theirs:
                cells = []
                for t in THRESHOLDS:
                    mine, other = results[a]["reached"].get(t), results[b]["reached"].get(t)
                    if mine is None:
                        cells.append("-")
                    elif other is None:
                        cells.append(f"> {results[b]['total'] / mine:.1f}x" if results[b]["cut"] else "-")
                    else:
                        cells.append(f"{other / mine:.1f}x")
                print(f"| {a} vs {b} | {cells[0]} | {cells[1]} |")
    fast99 = results.get("fast", {}).get("reached", {}).get(0.990)
    acc995 = results.get("accurate", {}).get("reached", {}).get(0.995)
    print(f"\ntargets: 99.5% within 60 s: {'met' if acc995 is not None and acc995 <= 60 else 'NOT met'}"
          + (f" ({acc995:.1f} s)" if acc995 else "")
          + (f"; fast reaches 99.0% in {fast99:.1f} s" if fast99 else ""))
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
