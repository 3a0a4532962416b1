"""Read the digits in a picture: preprocessing (images, ink, segment, shape) + a trained model, as one object.

Every front end (the `digitrec predict` command, the desktop and web apps, Python users) reads
through a Recognizer, so they all see the same preprocessing and the same model.

    >>> import digitrec
    >>> rec = digitrec.load()                     # the bundled model; digitrec.load("runs/x") for yours
    >>> reading = rec.read("photo.jpg")           # or an (H, W[, 3|4]) uint8 array, a PIL image, bytes
    >>> reading.text, reading.digits[0].box, reading.digits[0].confidence
    ('3141', (112, 80, 61, 98), 0.998)
    >>> rec.classify(mnist_digits).shape          # uint8 (N, 28, 28) -> probabilities (N, 10)
    (5, 10)

The model is any callable from a float32 array (N, 1, 28, 28) in [0, 1] (white ink on black) to
logits (N, 10); TorchBackend wraps a checkpoint's torch module, export.OnnxBackend an ONNX graph. Torch
is imported only by the torch backend, so reading with ONNX starts fast.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

import cv2
import numpy as np

from digitrec.images import Picture, load_image
from digitrec.marks import MARK_LEVEL, digit_probability
from digitrec.segment import Rejected, find_digits

ZERO_NEIGHBOURS = 2  # a mark read as 0 is a zero in a line of at least this many other digits ...
ZERO_SURE = 0.9  # ... read as 0 at least this surely ...
ZERO_HEIGHT = 0.75  # ... and at least this share of their median height
LOW_CONFIDENCE = 0.7  # digits read with a lower probability than this are flagged
TOP_K = 3  # alternatives kept per digit
STRING_WEIGHT = 1.0  # a digit cut from a string reads by classifier^(1-w) * string model^w: the string model alone reads best
DECIMALS = 4  # probabilities in JSON; smaller ones keep one significant digit (0.0004, 3e-06)

Logits = Callable[[np.ndarray], np.ndarray]  # float32 (N, 1, 28, 28) -> logits (N, 10)


@dataclass(frozen=True)
class Digit:
    label: int  # the digit read, 0-9
    confidence: float  # the model's probability for it
    box: tuple[int, int, int, int]  # (x, y, w, h) in the picture's pixels
    top: list[tuple[int, float]]  # the likeliest labels with their probabilities, best first
    line: int  # line of writing, 0 at the top
    low_confidence: bool  # confidence below the recognizer's threshold: worth a second look
    image: np.ndarray = field(repr=False, compare=False)  # (28, 28) uint8: what the model saw

    def to_dict(self) -> dict:
        return {"label": self.label, "confidence": _rounded(self.confidence), "box": [int(v) for v in self.box],
                "top": [[label, _rounded(p)] for label, p in self.top]}


def _rounded(p: float) -> float:
    return round(p, DECIMALS) if p >= 10 ** -(DECIMALS - 1) else float(f"{p:.1g}")


@dataclass(frozen=True)
class Reading:
    text: str  # digits in reading order; lines joined by "\n"; "" when there are none
    digits: list[Digit]  # in reading order
    notes: tuple[str, ...] = ()  # things to tell the reader, e.g. only one frame of an animation read
    rejected: tuple[Rejected, ...] = ()  # marks found that are not digits (separators, dashes, lines), left out of text

    def to_dict(self, file: str | None = None) -> dict:
        """The `digitrec predict --json` object: {"file", "text", "digits": [{label, confidence, box, top}]},
        and "rejected": [{"box", "reason"}] when marks that are not digits were left out."""
        head = {} if file is None else {"file": file}
        out = {**head, "text": self.text, "digits": [d.to_dict() for d in self.digits]}
        if self.rejected:
            out["rejected"] = [{"box": [int(v) for v in r.box], "reason": r.reason} for r in self.rejected]
        return out

    def describe(self) -> str:
        """One line for people: '3141  (lowest confidence 0.97)'; two written lines show as '31 / 41'.

        >>> reading.describe()
        '3141  (lowest confidence 0.41; unsure of digit #2: 1 or 7)'
        """
        if not self.digits:
            return "no digits found"
        lowest = min(d.confidence for d in self.digits)
        unsure = [f"#{i}: " + " or ".join(str(label) for label, _ in d.top[:2])
                  for i, d in enumerate(self.digits, 1) if d.low_confidence]
        detail = f"; unsure of digit {', '.join(unsure)}" if unsure else ""
        return f"{self.text.replace(chr(10), ' / ')}  (lowest confidence {lowest:.2f}{detail})"


class TorchBackend:
    """A torch module as a Logits callable: inference mode, no gradients, nothing kept between calls."""

    def __init__(self, model):
        self.model = model.eval()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.model(torch.from_numpy(x)).float().numpy()


class Recognizer:
    """Model + MNIST-style preprocessing. Read-only after construction: `read` may run in many threads.

    >>> rec = Recognizer.from_checkpoint("runs/fast")
    >>> rec.read(np.full((280, 280), 255, np.uint8)).text    # a blank canvas
    ''
    """

    def __init__(self, logits: Logits, meta: dict | None = None, low_confidence: float = LOW_CONFIDENCE,
                 name: str | None = None, marks: bool = True, strings: bool = True):
        self.logits = logits
        self.marks = marks  # leave out marks that are no digit at all (letters, symbols, scribbles)
        self.strings = strings  # the string model reads touching digits, and lines it reads much better whole
        self.meta = meta or {}  # the checkpoint's model.json: architecture, metrics, ...
        self.low_confidence = low_confidence
        self.name = name  # how users are told which model reads: "bundled", "personal, 40 samples", a folder

    @classmethod
    def from_checkpoint(cls, run_dir: str | os.PathLike | None = None, **kw) -> "Recognizer":
        """Load a run directory's model (None: the bundled model) with torch."""
        from digitrec.checkpoint import load_checkpoint
        from digitrec.home import model_name, resolve_model

        where = resolve_model(run_dir)
        model, meta = load_checkpoint(where)
        return cls(TorchBackend(model), meta, name=model_name(where, meta), **kw)

    def classify(self, images: np.ndarray) -> np.ndarray:
        """uint8 digits (N, 28, 28), white on black -> float probabilities (N, 10).

        >>> rec.classify(np.zeros((2, 28, 28), np.uint8)).sum(axis=1)
        array([1., 1.], dtype=float32)
        """
        images = np.asarray(images)
        if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
            raise ValueError(f"expected uint8 digits of shape (N, 28, 28), got {images.dtype} {images.shape}")
        if not len(images):
            return np.zeros((0, 10), np.float32)
        x = images[:, None].astype(np.float32) / 255  # (N, 1, 28, 28) in [0, 1], as evaluate.as_batch
        logits = np.asarray(self.logits(x), np.float32)  # (N, 10)
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def read(self, source, top_k: int = TOP_K) -> Reading:
        """Read every digit in a picture: a path, bytes, a PIL image or an array (H, W[, 3|4]).

        Raises images.ImageError (a UsageError) when the picture cannot be read.
        """
        picture = load_image(source)

        def in_file(box):  # boxes in the file's pixels, also when it was decoded reduced
            return tuple(v * picture.scale for v in box)

        # What is weighed while finding the digits is not weighed again.
        score, digitness = _Remembered(self.classify, (10,)), _Remembered(digit_probability, ())
        found = find_digits(picture.pixels, score=score, string_model=self.strings,
                            not_digit=(lambda images: digitness(images) < MARK_LEVEL) if self.marks else None)  # the classifier chooses where touching digits part
        # A mark whose ink does not survive shaping (to_mnist gives an empty field) is no digit.
        # A digit the string model read is one even when its cut is too thin to shape (a 1 inside a 4).
        crops = [c for c in found.crops if c.image.any() or c.string_probs is not None]
        rejected = [Rejected(in_file(r.box), r.reason) for r in found.rejected]
        # Digits read whole (not those the string model read in a string) may be marks that are no digit.
        single = [i for i, c in enumerate(crops) if c.string_probs is None]
        if self.marks and single:
            p = digitness(np.stack([crops[i].image for i in single]))
            drop = {i for i, pi in zip(single, p) if pi < MARK_LEVEL}
            drop -= _zeros_among_digits(crops, drop, score)
            rejected += [Rejected(in_file(crops[i].box), "not a digit") for i in sorted(drop)]
            crops = [c for i, c in enumerate(crops) if i not in drop]
        renumber = {old: new for new, old in enumerate(sorted({c.line for c in crops}))}
        probs = score(np.stack([c.image for c in crops]) if crops else np.zeros((0, 28, 28), np.uint8))
        probs = [p if c.string_probs is None else _together(p, c.string_probs) for c, p in zip(crops, probs)]
        digits = []
        for crop, p in zip(crops, probs):
            order = np.argsort(-p)[:max(1, top_k)]
            label, confidence = int(order[0]), float(p[order[0]])
            box = in_file(crop.box)
            digits.append(Digit(label, confidence, box, [(int(k), float(p[k])) for k in order],
                                renumber[crop.line], confidence < self.low_confidence, crop.image))
        lines = [""] * (max((d.line for d in digits), default=-1) + 1)
        for d in digits:
            lines[d.line] += str(d.label)
        return Reading("\n".join(lines), digits, picture.notes, tuple(rejected))


def _zeros_among_digits(crops, drop: set[int], score) -> set[int]:
    """The marks of `drop` that are zeros written among digits: read as 0 surely, in a line holding at
    least ZERO_NEIGHBOURS other digits or such zeros (one of them a digit the marks check kept), and of
    their height. A fast, open or looped zero looks more like a letter o than like MNIST's zeros."""
    zeros = {i for i in drop if (p := score(crops[i].image[None])[0]).argmax() == 0 and p[0] >= ZERO_SURE}
    keep = set()
    for i in zeros:
        line = [j for j, c in enumerate(crops) if c.line == crops[i].line and (j not in drop or j in zeros)]
        digits = [j for j in line if j not in drop]
        if len(line) - 1 < ZERO_NEIGHBOURS or not digits:
            continue
        height = float(np.median([crops[j].box[3] for j in line]))
        if crops[i].box[3] >= ZERO_HEIGHT * height:
            keep.add(i)
    return keep


class _Remembered:
    """A function of 28x28 crops (N, 28, 28) -> (N, *shape) that remembers its answers within one
    picture, so no crop is weighed twice."""

    def __init__(self, weigh: Callable[[np.ndarray], np.ndarray], shape: tuple[int, ...]):
        self.weigh, self.shape, self.seen = weigh, shape, {}

    def __call__(self, images: np.ndarray) -> np.ndarray:
        keys = [im.tobytes() for im in images]
        new = [i for i, k in enumerate(keys) if k not in self.seen]
        if new:
            self.seen.update(zip((keys[i] for i in new), self.weigh(np.asarray(images)[new])))
        return np.stack([self.seen[k] for k in keys]) if keys else np.zeros((0, *self.shape), np.float32)


def _together(classifier: np.ndarray, string: np.ndarray) -> np.ndarray:
    """What the classifier and the string model read in one digit, weighed as measured (STRING_WEIGHT)."""
    p = np.maximum(classifier, 1e-9) ** (1 - STRING_WEIGHT) * np.maximum(string, 1e-9) ** STRING_WEIGHT
    return (p / p.sum()).astype(np.float32)


def load(run_dir: str | os.PathLike | None = None, backend: str = "auto", threads: int | None = None,
         **kw) -> Recognizer:
    """The Recognizer of a run directory, or "bundled" / "personal"; None is the personal model
    (made by `digitrec learn fit`) where one exists, else the model bundled with the package.

    backend: "onnx" (model.onnx, onnxruntime, no torch), "torch", or "auto" (ONNX when it was exported
    from the current weights); threads caps the runtime's threads. See export.load_logits.

    >>> digitrec.load().read("photo.jpg").text
    '3141'
    """
    from digitrec.export import load_logits
    from digitrec.home import model_name, resolve_model

    where = resolve_model(run_dir)
    logits, meta = load_logits(where, backend, threads)
    return Recognizer(logits, meta, name=model_name(where, meta), **kw)


def draw_reading(pixels: np.ndarray | Picture, reading: Reading) -> np.ndarray:
    """A copy of the picture (RGB uint8) with each digit's box and label drawn; doubtful ones in orange,
    with their confidence.

    >>> cv2.imwrite("annotated.png", draw_reading(picture, reading)[:, :, ::-1])
    """
    scale = 1
    if isinstance(pixels, Picture):  # a big picture decoded reduced is drawn at that size
        pixels, scale = pixels.pixels, pixels.scale
    img = np.ascontiguousarray(np.asarray(pixels, np.uint8))
    img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB) if img.ndim == 2 else img.copy()
    thick = max(1, round(max(img.shape[:2]) / 500))
    for d in reading.digits:
        x, y, w, h = (round(v / scale) for v in d.box)
        colour = (255, 140, 0) if d.low_confidence else (0, 200, 0)
        cv2.rectangle(img, (x, y), (x + w - 1, y + h - 1), colour, thick)
        label = f"{d.label}? {d.confidence:.2f}" if d.low_confidence else str(d.label)
        size = max(0.4, h / 100)
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, size, thick)
        ty = y - 4 if y - th - base - 4 >= 0 else y + h + th + 4
        cv2.rectangle(img, (x, ty - th - base // 2 - 2), (x + tw + 2, ty + base // 2), colour, cv2.FILLED)
        cv2.putText(img, label, (x + 1, ty - 1), cv2.FONT_HERSHEY_SIMPLEX, size, (255, 255, 255), thick, cv2.LINE_AA)
    return img
