"""Metrics of a classifier on labelled digits: accuracy, loss, per-class figures, confusion matrix.

    >>> from digitrec.checkpoint import load_checkpoint
    >>> from digitrec.data import load_mnist
    >>> model, _ = load_checkpoint("runs/fast-20261121-101500")
    >>> mnist = load_mnist()
    >>> evaluate_model(model, mnist.test_images, mnist.test_labels)["accuracy"]
    0.9912
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm


def as_batch(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 digits (N, 28, 28) -> the float model input (N, 1, 28, 28) in [0, 1], channels-last."""
    x = torch.as_tensor(images)
    if x.dim() == 3:
        x = x.unsqueeze(1)
    return (x.float() / 255).contiguous(memory_format=torch.channels_last)


@torch.inference_mode()
def predict_logits(model: torch.nn.Module, images, batch_size: int = 1000, progress: bool | None = False) -> torch.Tensor:
    """Logits (N, 10) on the CPU for uint8 digits (N, 28, 28), in batches, in eval mode, on the model's device.

    `progress` shows a bar on stderr (None: where stderr is a terminal).
    """
    was_training = model.training
    device = next(model.parameters(), torch.zeros(0)).device
    model.eval()
    out = []
    with tqdm(total=len(images), desc="evaluating", unit="img", leave=False, dynamic_ncols=True,
              disable=(not progress) if progress is not None else None) as bar:
        for i in range(0, len(images), batch_size):
            out.append(model(as_batch(images[i:i + batch_size]).to(device)).float().cpu())
            bar.update(len(out[-1]))
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, 10)


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, classes: int = 10) -> np.ndarray:
    """Counts (true, predicted): row i holds where the images of digit i went."""
    return np.bincount(labels * classes + predicted, minlength=classes * classes).reshape(classes, classes)


def per_class(cm: np.ndarray) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support of each digit, from a confusion matrix."""
    out = {}
    for d in range(len(cm)):
        tp, predicted, support = cm[d, d], cm[:, d].sum(), cm[d].sum()
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out[str(d)] = {"precision": float(precision), "recall": float(recall), "f1": float(f1), "support": int(support)}
    return out


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    """Gap between confidence and accuracy, averaged over equal-width confidence bins."""
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            ece += mask.mean() * abs(confidence[mask].mean() - correct[mask].mean())
    return float(ece)


def metrics_from_logits(logits: torch.Tensor, labels) -> dict:
    """The `digitrec evaluate --json` object (plus calibration) for logits and true labels."""
    labels_t = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    probs = logits.softmax(1)
    confidence, predicted = probs.max(1)
    y, p = labels_t.numpy(), predicted.numpy()
    cm = confusion_matrix(y, p)
    return {
        "accuracy": float((p == y).mean()) if len(y) else 0.0,
        "loss": float(F.cross_entropy(logits, labels_t)) if len(y) else 0.0,
        "n": int(len(y)),
        "per_class": per_class(cm),
        "confusion_matrix": cm.tolist(),
        "ece": expected_calibration_error(confidence.numpy(), p == y),
    }


def fit_temperature(logits: torch.Tensor, labels) -> float:
    """The temperature T that minimises the cross-entropy of logits / T (a 1-d search over 0.2-5)."""
    labels_t = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    grid = torch.exp(torch.linspace(math.log(0.2), math.log(5.0), 161))
    losses = torch.stack([F.cross_entropy(logits / t, labels_t) for t in grid])
    return round(float(grid[losses.argmin()]), 4)


def evaluate_model(model: torch.nn.Module, images, labels, batch_size: int = 1000,
                   progress: bool | None = False) -> dict:
    """Metrics of `model` on uint8 digits (N, 28, 28) with their labels; `progress` as in predict_logits."""
    return metrics_from_logits(predict_logits(model, images, batch_size, progress), labels)


def format_report(m: dict) -> str:
    """Readable tables: the headline numbers, per-class figures and the confusion matrix."""
    lines = [f"test accuracy {m['accuracy']:.2%}  ({round(m['accuracy'] * m['n'])}/{m['n']} right)   "
             f"loss {m['loss']:.4f}   calibration error {m['ece']:.4f}", "",
             "digit  precision  recall     F1  support"]
    for d, c in m["per_class"].items():
        lines.append(f"{d:>5}  {c['precision']:>9.2%}  {c['recall']:>6.2%}  {c['f1']:>5.2%}  {c['support']:>7}")
    lines += ["", "confusion matrix (rows: true digit, columns: predicted)",
              "       " + "".join(f"{d:>6}" for d in range(10))]
    for d, row in enumerate(m["confusion_matrix"]):
        lines.append(f"{d:>5}  " + "".join(f"{v:>6}" if v else "     ." for v in row))
    return "\n".join(lines)
