"""Figures: each renders headless to a valid PNG, is labelled, and shows the numbers it is given."""

import io

import numpy as np
import pytest
import torch
from matplotlib.patches import Rectangle
from PIL import Image

from conftest import tiny_digits
from digitrec import plots
from digitrec.evaluate import expected_calibration_error, metrics_from_logits


@pytest.fixture(scope="module")
def predictions():
    """200 digits and the probabilities of a classifier right on about 90% of them."""
    images, labels = tiny_digits(200, 3)
    rng = np.random.default_rng(0)
    guess = np.where(rng.random(200) < 0.9, labels, rng.integers(0, 10, 200))
    logits = torch.as_tensor(rng.normal(0, 1, (200, 10)), dtype=torch.float32)
    logits[torch.arange(200), torch.as_tensor(guess)] += torch.as_tensor(rng.uniform(0.5, 6, 200), dtype=torch.float32)
    return images, labels, logits.softmax(1).numpy(), metrics_from_logits(logits, labels)


def decoded(fig) -> Image.Image:
    image = Image.open(io.BytesIO(plots.png_bytes(fig)))
    image.load()
    return image


def texts(fig) -> str:
    """Every piece of text drawn on the figure, titles and labels included."""
    return "\n".join(t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text")))


HISTORY = [{"epoch": e, "train_loss": 1 / e, "train_accuracy": 1 - 0.1 / e, "val_loss": 0.8 / e,
            "val_accuracy": 1 - 0.08 / e, "lr": 1e-3, "seconds": 2.0} for e in (1, 2, 3)]


def test_learning_curves_plot_every_epoch_on_two_labelled_panels():
    fig = plots.learning_curves(HISTORY, test_accuracy=0.97)
    loss_ax, acc_ax = fig.axes
    assert [ax.get_xlabel() for ax in fig.axes] == ["epoch", "epoch"]
    assert "loss" in loss_ax.get_ylabel() and "accuracy" in acc_ax.get_ylabel()
    train_loss, val_loss = loss_ax.get_lines()
    assert list(train_loss.get_xdata()) == [1, 2, 3]
    assert np.allclose(val_loss.get_ydata(), [0.8, 0.4, 0.8 / 3])
    legend = [t.get_text() for t in acc_ax.get_legend().get_texts()]
    assert legend == ["training accuracy", "validation accuracy", "test accuracy 97.00%"]
    assert decoded(fig).size[0] >= 800


def test_learning_curves_without_validation_or_with_one_epoch():
    rows = [{**HISTORY[0], "val_loss": "", "val_accuracy": ""}]
    fig = plots.learning_curves(rows)
    assert all(len(ax.get_lines()) == 1 for ax in fig.axes)  # training only
    decoded(fig)


def test_confusion_heatmap_holds_the_matrix_and_every_count(predictions):
    *_, m = predictions
    cm = np.array(m["confusion_matrix"])
    fig = plots.confusion(cm)
    ax = fig.axes[0]
    right, wrong = (np.ma.filled(mesh.get_array(), 0).reshape(10, 10) for mesh in ax.collections[:2])
    shown = right + wrong
    assert (shown == cm).all()
    assert shown.sum() == m["n"] == 200
    assert np.trace(shown) / shown.sum() == pytest.approx(m["accuracy"])
    counts = [int(t.get_text()) for t in ax.texts if t.get_text()]
    assert sorted(counts) == sorted(cm[(cm > 0) | np.eye(10, dtype=bool)].tolist())
    assert f"{m['accuracy']:.2%}" in ax.get_title()
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("predicted digit", "true digit")
    assert decoded(fig).size == (800, 680)


def test_samples_mark_exactly_the_mistakes_they_show(predictions):
    images, labels, probs, m = predictions
    fig = plots.samples(images, labels, probs, count=40, columns=8)
    frames = [p for p in fig.axes[0].patches if isinstance(p, Rectangle)]
    wrong_captions = [t for t in fig.axes[0].texts if "true" in t.get_text()]
    assert len(frames) == len(wrong_captions) >= 4  # a tenth of the grid at least
    assert f"{40 - len(frames)} right, {len(frames)} wrong" in texts(fig)
    for caption in wrong_captions:  # "7 (83%)\ntrue 1": the digit read is not the true one
        read, true = caption.get_text().split()[0], caption.get_text().split()[-1]
        assert read != true
    assert decoded(fig).size[0] > 500


def test_mistakes_are_the_most_confident_ones_in_order(predictions):
    images, labels, probs, _ = predictions
    fig = plots.mistakes(images, labels, probs, count=6)
    captions = [t.get_text() for t in fig.axes[0].texts]
    shown = [float(c.split("(")[1].split("%")[0]) for c in captions]
    wrong = probs.argmax(1) != labels
    best = sorted(probs.max(1)[wrong], reverse=True)[:6]
    assert shown == [round(100 * p) for p in best]
    assert all(c.startswith("read ") and "\ntrue " in c for c in captions)
    assert f"of {wrong.sum()} in 200 test digits" in texts(fig)


def test_mistakes_without_any():
    images, labels = tiny_digits(20, 0)
    fig = plots.mistakes(images, labels, np.eye(10)[labels])
    assert "No mistakes" in texts(fig)
    decoded(fig)


def test_per_class_bars_are_the_recall_of_each_digit(predictions):
    *_, m = predictions
    fig = plots.per_class(m["per_class"], m["accuracy"])
    ax = fig.axes[0]
    heights = [bar.get_height() for bar in ax.patches]
    assert heights == pytest.approx([m["per_class"][str(d)]["recall"] for d in range(10)])
    assert [t.get_text() for t in ax.get_xticklabels()] == [str(d) for d in range(10)]
    assert ax.get_legend() is not None and "accuracy" in ax.get_ylabel()
    decoded(fig)


def test_per_class_labels_keep_the_second_decimal():
    metrics = {str(d): {"recall": 0.9825, "f1": 0.985, "precision": 0.9875, "support": 400} for d in range(10)}
    fig = plots.per_class(metrics, 0.9825)
    labels = [t.get_text() for t in fig.axes[0].texts]
    assert labels and all(label.startswith("98.25%") for label in labels)  # not rounded to 98.2%


def test_calibration_shows_the_same_error_as_the_metrics(predictions):
    _, labels, probs, m = predictions
    fig = plots.calibration(probs, labels)
    assert f"{m['ece']:.4f}" in texts(fig)
    assert m["ece"] == pytest.approx(expected_calibration_error(probs.max(1), probs.argmax(1) == labels))
    counts = fig.axes[1].patches
    assert sum(bar.get_height() for bar in counts) == 200
    assert fig.axes[0].get_legend() is not None
    decoded(fig)


def test_save_writes_a_png(tmp_path, predictions):
    *_, m = predictions
    plots.save(plots.per_class(m["per_class"]), tmp_path / "p.png")
    assert Image.open(tmp_path / "p.png").format == "PNG"
