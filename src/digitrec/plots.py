"""Figures of a trained model: learning curves, confusion matrix, sample predictions, mistakes,
per-class accuracy and calibration. Headless (no pyplot, no display): each function returns a
matplotlib Figure, which `save` writes as a PNG and a notebook shows as it is.

    >>> from digitrec import plots
    >>> from digitrec.train import read_history
    >>> fig = plots.learning_curves(read_history("runs/fast/history.csv"))
    >>> plots.save(fig, "runs/fast/curves.png")
"""

from __future__ import annotations

import io
import os

import matplotlib as mpl
import numpy as np
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator, PercentFormatter

from digitrec.data import atomic_write_bytes
from digitrec.evaluate import expected_calibration_error

DPI = 100
CALIBRATION_BINS = 15  # the bins of evaluate.expected_calibration_error, so the diagram and its ECE agree
RIGHT, WRONG = "#1b7a3a", "#c62828"  # green for right answers, red for mistakes
TRAIN, VAL, TEST = "#1f77b4", "#ff7f0e", "#2ca02c"
STYLE = {**sns.axes_style("whitegrid"), **sns.plotting_context("notebook"),
         "axes.titleweight": "bold", "figure.titleweight": "bold", "figure.facecolor": "white"}


def _figure(width: float, height: float) -> Figure:
    with mpl.rc_context(STYLE):
        return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def png_bytes(fig: Figure) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def save(fig: Figure, path: str | os.PathLike) -> None:
    """Write the figure as a PNG, atomically.

    >>> save(confusion(metrics["confusion_matrix"]), "confusion.png")
    """
    atomic_write_bytes(path, png_bytes(fig))


def learning_curves(history: list[dict], test_accuracy: float | None = None, title: str = "Learning curves") -> Figure:
    """Loss and accuracy per epoch, training and validation, on two panels.

    `history` holds the rows of a run's history.csv (see train.read_history); `test_accuracy`, if
    given, is drawn as a reference line.

    >>> learning_curves([{"epoch": 1, "train_loss": 0.2, "train_accuracy": 0.94,
    ...                   "val_loss": 0.05, "val_accuracy": 0.985}], test_accuracy=0.988)
    """
    epochs = [int(r["epoch"]) for r in history]

    def series(key):
        return [np.nan if r.get(key) in ("", None) else float(r[key]) for r in history]

    with mpl.rc_context(STYLE):
        fig = _figure(11, 4.2)
        loss_ax, acc_ax = fig.subplots(1, 2)
        for ax, what in ((loss_ax, "loss"), (acc_ax, "accuracy")):
            ax.plot(epochs, series(f"train_{what}"), "o-", color=TRAIN, label=f"training {what}")
            if not np.all(np.isnan(series(f"val_{what}"))):
                ax.plot(epochs, series(f"val_{what}"), "s-", color=VAL, label=f"validation {what}")
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if len(epochs) == 1:  # one point: give it room instead of a zero-width axis
                ax.set_xlim(epochs[0] - 1, epochs[0] + 1)
        if test_accuracy is not None:
            acc_ax.axhline(test_accuracy, color=TEST, linestyle="--", label=f"test accuracy {test_accuracy:.2%}")
        loss_ax.set_ylabel("cross-entropy loss")
        loss_ax.set_title("Loss (lower is better)")
        acc_ax.set_ylabel("accuracy")
        acc_ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=1))
        acc_ax.set_title("Accuracy (higher is better)")
        loss_ax.legend(loc="upper right")
        acc_ax.legend(loc="lower right")
        fig.suptitle(title)
    return fig


def confusion(cm, title: str | None = None) -> Figure:
    """Heatmap of a confusion matrix (rows: true digit, columns: predicted) with every count written.

    Right answers (the diagonal) and mistakes get separate colour scales, so that a few dozen
    mistakes stand out beside a thousand right answers and every count stays readable.

    >>> confusion(evaluate_model(model, images, labels)["confusion_matrix"])
    """
    cm = np.asarray(cm, dtype=np.int64)
    n, right = int(cm.sum()), int(np.trace(cm))
    diagonal = np.eye(len(cm), dtype=bool)
    counts = np.where((cm > 0) | diagonal, cm.astype(str), "")  # blank mistakes instead of a sea of zeros
    errors = np.where(diagonal, 0, cm)
    with mpl.rc_context(STYLE):
        fig = _figure(8, 6.8)
        ax = fig.subplots()
        sns.heatmap(cm, mask=~diagonal, cmap="Greens", vmin=0, vmax=max(cm.max(), 1) * 1.15, annot=counts, fmt="",
                    annot_kws={"fontsize": 10, "fontweight": "bold"}, cbar=False, square=True,
                    linewidths=0.5, linecolor="white", ax=ax)
        sns.heatmap(cm, mask=diagonal, cmap="Reds", vmin=0, vmax=max(errors.max(), 1), annot=counts, fmt="",
                    annot_kws={"fontsize": 10}, square=True, linewidths=0.5, linecolor="white", ax=ax,
                    cbar_kws={"label": "mistaken images (off the diagonal)", "shrink": 0.8})
        ax.set_xlabel("predicted digit")
        ax.set_ylabel("true digit")
        ax.tick_params(left=False, bottom=False)
        ax.set_yticklabels(ax.get_yticklabels(), rotation=0)
        ax.set_title(title or f"Test confusion matrix: {right} of {n} right ({right / max(n, 1):.2%})")
    return fig


def _digit_mosaic(fig: Figure, images, titles: list[str], wrong, columns: int, title_lines: int, heading: str) -> None:
    """Digits in a grid on one image, captioned, mistakes framed in red, under a heading.

    One image with text on top draws in a fraction of the time of a subplot per digit.
    """
    rows = -(-len(images) // columns)
    cell_w, cell_h = 36, 28 + 12 * title_lines  # pixels per digit: the 28x28 image, margins, caption
    canvas = np.zeros((rows * cell_h, columns * cell_w), np.uint8)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    for k, (image, caption, miss) in enumerate(zip(images, titles, wrong)):
        r, c = divmod(k, columns)
        y, x = r * cell_h + cell_h - 30, c * cell_w + 4
        canvas[y:y + 28, x:x + 28] = image
        ax.text(x + 14, y - 2, caption, ha="center", va="bottom", fontsize=9.5, linespacing=1.1,
                color=WRONG if miss else RIGHT, fontweight="bold" if miss else "normal")
        if miss:
            ax.add_patch(Rectangle((x - 1.5, y - 1.5), 30, 30, fill=False, edgecolor=WRONG, linewidth=2.5))
    # Dark ink on white paper reads as handwriting; MNIST stores white ink on black.
    ax.imshow(canvas, cmap="gray_r", vmin=0, vmax=255, interpolation="nearest", extent=(0, columns * cell_w, rows * cell_h, 0))
    ax.set_xlim(0, columns * cell_w)
    top = 3 + 7 * (heading.count("\n") + 1)  # room above the first row for the heading
    ax.set_ylim(rows * cell_h, -top)
    fig.set_size_inches(columns * cell_w / 32, (rows * cell_h + top) / 32)
    fig.suptitle(heading, y=0.995, va="top", fontsize=12)


def samples(images, labels, probs, count: int = 60, columns: int = 10, seed: int = 0) -> Figure:
    """A grid of random test digits, each with the predicted label and its confidence; mistakes in red.

    A tenth of the grid (at most) is random mistakes, so that a 99% model still shows some; the
    title says how many of each there are.

    >>> samples(mnist.test_images, mnist.test_labels, probs)   # probs: softmax outputs (N, 10)
    """
    images, labels, probs = np.asarray(images), np.asarray(labels), np.asarray(probs)
    predicted, confidence = probs.argmax(1), probs.max(1)
    rng = np.random.default_rng(seed)
    count = min(count, len(labels))
    wrong, right = np.flatnonzero(predicted != labels), np.flatnonzero(predicted == labels)
    # At least a tenth of the grid is mistakes, so that a 99% model still shows some.
    n_wrong = max(round(count * len(wrong) / len(labels)), min(len(wrong), count // 10), count - len(right))
    boosted = n_wrong > round(count * len(wrong) / len(labels))
    pick = np.concatenate([rng.choice(wrong, n_wrong, replace=False), rng.choice(right, count - n_wrong, replace=False)])
    pick = rng.permutation(pick)
    miss = predicted[pick] != labels[pick]
    titles = [f"{predicted[i]} ({confidence[i]:.0%})" + (f"\ntrue {labels[i]}" if m else "") for i, m in zip(pick, miss)]
    with mpl.rc_context(STYLE):
        fig = _figure(1, 1)
        fig.set_layout_engine("none")
        note = f"\n(mistakes shown more often than the {len(wrong) / len(labels):.1%} of test digits misread)" if boosted else ""
        _digit_mosaic(fig, images[pick], titles, miss, columns, title_lines=2 if miss.any() else 1,
                      heading=f"Random test digits, each with the digit read and the confidence: "
                              f"{count - n_wrong} right, {n_wrong} wrong (in red){note}")
    return fig


def mistakes(images, labels, probs, count: int = 24, columns: int = 8) -> Figure:
    """The mistakes the model was most sure of, each with the true and the predicted digit.

    >>> mistakes(mnist.test_images, mnist.test_labels, probs)
    """
    images, labels, probs = np.asarray(images), np.asarray(labels), np.asarray(probs)
    predicted, confidence = probs.argmax(1), probs.max(1)
    wrong = np.flatnonzero(predicted != labels)
    worst = wrong[np.argsort(-confidence[wrong], kind="stable")][:count]
    with mpl.rc_context(STYLE):
        fig = _figure(1, 1)
        fig.set_layout_engine("none")
        if len(worst):
            titles = [f"read {predicted[i]} ({confidence[i]:.0%})\ntrue {labels[i]}" for i in worst]
            _digit_mosaic(fig, images[worst], titles, [True] * len(worst), columns, title_lines=2,
                          heading=f"The {len(worst)} most confident mistakes (of {len(wrong)} in {len(labels)} test digits)")
        else:
            fig.set_size_inches(6, 1.5)
            fig.text(0.5, 0.5, f"No mistakes on these {len(labels)} test digits", ha="center", va="center", fontsize=14)
    return fig


def per_class(per_class_metrics: dict, accuracy: float | None = None) -> Figure:
    """Bars of each digit's accuracy (recall: the share of its images read right), with its F1.

    `per_class_metrics` is the "per_class" entry of evaluate's metrics.

    >>> per_class(metrics["per_class"], metrics["accuracy"])
    """
    digits = sorted(per_class_metrics, key=int)
    recall = np.array([per_class_metrics[d]["recall"] for d in digits])
    f1 = np.array([per_class_metrics[d]["f1"] for d in digits])
    support = np.array([per_class_metrics[d]["support"] for d in digits])
    missed = np.rint(support * (1 - recall)).astype(int)
    x = np.arange(len(digits))
    with mpl.rc_context(STYLE):
        fig = _figure(10, 4.6)
        ax = fig.subplots()
        bars = ax.bar(x, recall, width=0.8, color="#4c72b0",
                      label="accuracy on the digit's images (recall)")
        ax.plot(x, f1, "D", color="black", markersize=6, label="F1 (balances precision and recall)")
        if accuracy is not None:
            ax.axhline(accuracy, color=WRONG, linestyle="--", linewidth=1.5, label=f"overall accuracy {accuracy:.2%}")
        # Good models score 97-100% on every digit; start the axis near the worst score so the
        # differences show, and say so on the axis.
        low = float(min(recall.min(), f1.min(), accuracy if accuracy is not None else 1.0))
        bottom = max(0.0, np.floor((low - 0.25 * (1 - low) - 0.002) * 100) / 100)
        ax.set_ylim(bottom, 1.0 + (1 - bottom) * 0.04)
        for bar, r, m in zip(bars, recall, missed):
            inside = r - bottom > 0.3 * (1 - bottom)  # a tall bar holds its label, a short one gets it above
            ax.text(bar.get_x() + bar.get_width() / 2, bottom + 0.02 * (1 - bottom) if inside else r,
                    f"{r:.2%}\n{m} missed", ha="center", va="bottom", fontsize=8,
                    color="white" if inside else "black", fontweight="bold")
        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0 if bottom < 0.9 else 1))
        ax.set_xticks(x, digits)
        ax.set_xlabel("true digit")
        ax.set_ylabel("accuracy" + (f" (axis starts at {bottom:.0%})" if bottom > 0 else ""))
        ax.set_title("Accuracy per digit")
        ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.07), ncol=3, fontsize=9, frameon=False)
    return fig


def calibration(probs, labels, bins: int = CALIBRATION_BINS) -> Figure:
    """Reliability diagram: how often the model is right at each level of confidence, with the
    expected calibration error (ECE) and how many predictions fall in each confidence bin.

    >>> calibration(probs, mnist.test_labels)
    """
    probs, labels = np.asarray(probs), np.asarray(labels)
    confidence, correct = probs.max(1), probs.argmax(1) == labels
    ece = expected_calibration_error(confidence, correct, bins)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    acc = np.array([correct[which == b].mean() if counts[b] else np.nan for b in range(bins)])
    conf = np.array([confidence[which == b].mean() if counts[b] else np.nan for b in range(bins)])
    centers, width = (edges[:-1] + edges[1:]) / 2, 1 / bins
    with mpl.rc_context(STYLE):
        fig = _figure(6.5, 7)
        top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1.2])
        top.plot([0, 1], [0, 1], "--", color="gray", label="perfectly calibrated")
        top.bar(centers, acc, width=width * 0.95, color=TRAIN, edgecolor="white", label="accuracy in the bin")
        gap_low, gap_high = np.fmin(acc, conf), np.fmax(acc, conf)
        top.bar(centers, gap_high - gap_low, bottom=gap_low, width=width * 0.95, fill=False, hatch="///",
                edgecolor=WRONG, linewidth=1, label="gap to the bin's mean confidence")
        top.set_xlim(0, 1)
        top.set_ylim(0, 1.02)
        top.set_ylabel("accuracy")
        top.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        top.set_title(f"Reliability diagram: expected calibration error {ece:.4f}")
        # Confident models leave the upper left empty, unsure ones the lower right.
        top.legend(loc="upper left" if confidence.mean() > 0.5 else "lower right", fontsize=9)
        bottom.bar(centers, counts, width=width * 0.95, color="gray")
        bottom.set_yscale("log")  # nearly all predictions sit in the last bin
        bottom.set_ylim(0.8, max(counts.max(), 1) * 3)
        bottom.set_ylabel("predictions\n(log scale)")
        bottom.set_xlabel("confidence (probability of the predicted digit)")
        bottom.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    return fig
