"""What the network saw: the 28x28 inputs, saliency maps of the strokes that decided, and feature maps.

    >>> rec = digitrec.load()
    >>> reading = rec.read("photo.jpg")
    >>> maps = occlusion(rec.logits, np.stack([d.image for d in reading.digits]))   # (N, 28, 28) in [0, 1]
    >>> write_figure("explain.png", picture, reading, rec)          # what `digitrec explain` draws

Occlusion needs only the model's outputs, so it works with any backend, ONNX included: erase a
small square of the digit at a time and see how much the answer's probability falls. Gradients
and feature maps need the torch module (TorchBackend).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

PATCH = 4  # side of the square erased at a time, in 28x28 pixels: about a stroke's width
STRIDE = 2  # step between erased squares; each pixel is covered by (PATCH / STRIDE)^2 of them
FEATURE_CHANNELS = 8  # channels shown per convolution layer in the figure


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def occlusion(logits, images: np.ndarray, labels=None) -> np.ndarray:
    """Saliency by erasing: uint8 digits (N, 28, 28) -> (N, 28, 28) floats in [0, 1], 1 where erasing
    the ink there lowers the log-probability of `labels` (default: the digit read) the most.

    `logits` is any Logits callable (float32 (N, 1, 28, 28) in [0, 1] -> (N, 10)). Squares without ink
    change nothing and are not tried, which keeps it to a few dozen model inputs per digit.

    >>> occlusion(rec.logits, digits).shape
    (4, 28, 28)
    """
    images = np.asarray(images, np.uint8)
    x = images[:, None].astype(np.float32) / 255  # (N, 1, 28, 28)
    base = softmax(np.asarray(logits(x), np.float32)) if len(x) else np.zeros((0, 10), np.float32)
    labels = base.argmax(1) if labels is None else np.asarray(labels)
    out = np.zeros(images.shape, np.float32)
    starts = range(0, 28 - PATCH + 1, STRIDE)
    for n in range(len(images)):
        spots = [(r, c) for r in starts for c in starts if images[n, r:r + PATCH, c:c + PATCH].any()]
        if not spots:
            continue
        batch = np.repeat(x[n:n + 1], len(spots), axis=0)  # (S, 1, 28, 28)
        for k, (r, c) in enumerate(spots):
            batch[k, 0, r:r + PATCH, c:c + PATCH] = 0
        # In log-probability: a confident model's 0.999 falling to 0.9 matters as much as 0.6 to 0.06.
        occluded = softmax(np.asarray(logits(batch), np.float32))[:, labels[n]]  # (S,)
        drop = np.log(base[n, labels[n]] + 1e-9) - np.log(occluded + 1e-9)
        heat, cover = np.zeros((28, 28), np.float32), np.zeros((28, 28), np.float32)
        for (r, c), d in zip(spots, drop):
            heat[r:r + PATCH, c:c + PATCH] += max(float(d), 0.0)
            cover[r:r + PATCH, c:c + PATCH] += 1
        heat = np.where(cover > 0, heat / np.maximum(cover, 1), 0)
        out[n] = heat / heat.max() if heat.max() > 0 else heat
    return out


def gradient(model, images: np.ndarray, labels=None) -> np.ndarray:
    """Saliency by gradients (torch models): |d probability / d pixel| x pixel, as (N, 28, 28) in [0, 1]."""
    import torch

    x = torch.from_numpy(np.asarray(images, np.uint8)[:, None].astype(np.float32) / 255).requires_grad_(True)
    model.eval()
    probs = model(x).float().softmax(1)  # (N, 10)
    labels = probs.argmax(1) if labels is None else torch.as_tensor(np.asarray(labels))
    probs.gather(1, labels.view(-1, 1)).sum().backward()
    heat = (x.grad.abs() * x.detach())[:, 0].numpy()  # (N, 28, 28)
    peak = heat.reshape(len(heat), -1).max(1).reshape(-1, 1, 1)
    return np.where(peak > 0, heat / np.maximum(peak, 1e-12), 0).astype(np.float32)


def torch_module(logits):
    """The torch module behind a TorchBackend (None for ONNX): the first member of an ensemble, unscaled."""
    from digitrec.models import Ensemble, TemperatureScaled

    model = getattr(logits, "model", None)
    if model is None:
        return None
    if isinstance(model, TemperatureScaled):
        model = model.model
    return model.members[0] if isinstance(model, Ensemble) else model


def feature_maps(module, image: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """The activations after each convolution (and its batch norm and ReLU) for one uint8 digit (28, 28).

    >>> [(name, a.shape) for name, a in feature_maps(torch_module(rec.logits), digit)]
    [('conv 1', (32, 28, 28)), ('conv 2', (64, 14, 14)), ('conv 3', (128, 7, 7))]
    """
    import torch

    layers = list(module.children()) if isinstance(module, torch.nn.Sequential) else list(module.modules())
    out, hooks, pending = [], [], [False]

    def keep(_, __, value):
        out.append((f"conv {len(out) + 1}", value.detach()[0].float().numpy().copy()))

    # After each conv, the first ReLU that follows it shows what the layer passes on.
    for layer in layers:
        if isinstance(layer, torch.nn.Conv2d):
            pending[0] = True
        elif isinstance(layer, torch.nn.ReLU) and pending[0]:
            hooks.append(layer.register_forward_hook(keep))
            pending[0] = False
    try:
        with torch.inference_mode():
            module.eval()(torch.from_numpy(np.asarray(image, np.uint8)[None, None].astype(np.float32) / 255))
    finally:
        for h in hooks:
            h.remove()
    return out


def write_figure(out: str | os.PathLike, picture, reading, rec) -> Path:
    """One PNG: per digit, its crop, the 28x28 input, the saliency maps, the top-3 bars and (torch) the feature maps."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from digitrec.data import atomic_write_bytes
    from digitrec.errors import UsageError

    pixels = getattr(picture, "pixels", picture)
    digits = reading.digits
    if not digits:
        raise UsageError("no digits found in the picture, so there is nothing to explain")
    images = np.stack([d.image for d in digits])
    occluded = occlusion(rec.logits, images)
    module = torch_module(rec.logits)
    grads = gradient(rec.logits.model, images) if module is not None else None
    maps = [feature_maps(module, d.image) for d in digits] if module is not None else [[] for _ in digits]
    fixed = 4 + (grads is not None)
    cols = fixed + max(len(m) for m in maps)
    fig, axes = plt.subplots(len(digits), cols, figsize=(2.1 * cols, 2.3 * len(digits)), squeeze=False)
    for row, d in enumerate(digits):
        ax = axes[row]
        x, y, w, h = d.box
        ax[0].imshow(pixels[y:y + h, x:x + w], cmap="gray" if pixels.ndim == 2 else None)
        ax[0].set_title(f"#{row + 1}: crop", fontsize=9)
        ax[1].imshow(d.image, cmap="gray", vmin=0, vmax=255)
        ax[1].set_title("what the model saw", fontsize=9)
        ax[2].imshow(d.image, cmap="gray", vmin=0, vmax=255)
        ax[2].imshow(occluded[row], cmap="inferno", alpha=0.65, vmin=0, vmax=1)
        ax[2].set_title("saliency: occlusion", fontsize=9)
        k = 3
        if grads is not None:
            ax[3].imshow(grads[row], cmap="inferno", vmin=0, vmax=1)
            ax[3].set_title("saliency: gradient", fontsize=9)
            k = 4
        labels = [str(label) for label, _ in d.top][::-1]
        probs = [p for _, p in d.top][::-1]
        ax[k].barh(labels, probs, color=["#4c72b0"] * (len(probs) - 1) + ["#e67e00" if d.low_confidence else "#1b7a3a"])
        ax[k].set_xlim(0, 1)
        ax[k].set_title(f"read {d.label}, {d.confidence:.1%}", fontsize=9)
        for label, p in zip(labels, probs):
            ax[k].text(min(p + 0.03, 0.75), label, f"{p:.1%}", va="center", fontsize=8)
        for j, (name, a) in enumerate(maps[row]):
            n = min(FEATURE_CHANNELS, len(a))
            tiles = a[:n]
            side = int(np.ceil(np.sqrt(n)))
            hh, ww = tiles.shape[1:]
            grid = np.zeros((side * (hh + 1) - 1, side * (ww + 1) - 1), np.float32)
            for t in range(n):
                r, c = divmod(t, side)
                tile = tiles[t] / tiles[t].max() if tiles[t].max() > 0 else tiles[t]
                grid[r * (hh + 1):r * (hh + 1) + hh, c * (ww + 1):c * (ww + 1) + ww] = tile
            ax[fixed + j].imshow(grid, cmap="viridis")
            ax[fixed + j].set_title(f"{name}: {n} of {len(a)} maps, {hh}x{ww}", fontsize=9)
        for a in ax:
            if a is not ax[k]:
                a.set_xticks([])
                a.set_yticks([])
        for a in ax[fixed + len(maps[row]):]:
            a.axis("off")
    member = " (feature maps of the ensemble's first member)" if module is not None and "members" in rec.meta else ""
    fig.suptitle(f"digitrec read '{reading.text.replace(chr(10), ' / ')}'{member}", fontsize=11)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    out = Path(out)
    try:
        atomic_write_bytes(out, buf.getvalue())
    except OSError as e:
        raise UsageError(f"cannot write {out}: {e.strerror or e}") from None
    return out
