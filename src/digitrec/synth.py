"""Realistic pictures of handwritten numbers made from 28x28 digits: ink on paper or chalk on a board.

Each digit is enlarged, set in rows like a written number (one or more lines), then the picture is
lit unevenly, blurred, made noisy and JPEG-compressed as a phone photo would be. The true box and
label of every digit are known, so a reader of such pictures can be scored exactly.

    >>> rng = np.random.default_rng(0)
    >>> sample = compose([[three, one], [four, one]], [[3, 1], [4, 1]], random_style(rng), rng)
    >>> sample.text, sample.image.dtype, sample.boxes[0]
    ('31\\n41', dtype('uint8'), (61, 48, 72, 118))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

INK_ALPHA = 0.35  # a digit's true box is where its ink covers more than this (its visible strokes)


@dataclass(frozen=True)
class Style:
    dark_on_light: bool = True  # dark ink on light paper; False: light chalk on a dark board
    scale: float = 5.0  # digits are this many times MNIST's size (3-8: 84-224 pixels per 28)
    light: float = 0.0  # uneven lighting: the dimmest part is this fraction darker (0-1)
    noise: float = 0.0  # sensor noise: standard deviation in grey levels
    blur: float = 0.0  # lens blur: Gaussian sigma in MNIST pixels (so it grows with the scale)
    jpeg: int | None = None  # JPEG quality (1-100), or None for lossless
    blue_ink: bool = False  # a blue pen instead of black (dark on light only)


@dataclass(frozen=True)
class Sample:
    image: np.ndarray  # (H, W, 3) uint8 RGB
    boxes: list[tuple[int, int, int, int]]  # (x, y, w, h) of each digit, in reading order
    labels: list[int]  # in reading order
    lines: list[int]  # line of each digit, 0 at the top
    text: str  # digits of each line, lines joined by "\n"


def random_style(rng: np.random.Generator) -> Style:
    """A random photo condition: either polarity, 3-8x, some lighting, noise, blur and JPEG."""
    dark = bool(rng.random() < 0.5)
    return Style(
        dark_on_light=dark,
        scale=float(rng.uniform(3, 8)),
        light=float(rng.uniform(0, 0.6)),
        noise=float(rng.uniform(0, 10)),
        blur=float(rng.uniform(0, 0.5)),
        jpeg=int(rng.integers(40, 96)) if rng.random() < 0.7 else None,
        blue_ink=dark and bool(rng.random() < 0.3),
    )


def compose(digits: Sequence[Sequence[np.ndarray]], labels: Sequence[Sequence[int]], style: Style,
            rng: np.random.Generator, size: tuple[int, int] | None = None) -> Sample:
    """Write the 28x28 uint8 `digits` (white on black, MNIST-like), one list per line, into a photo.

    `size` (width, height) makes the picture at least that large, the writing placed at random in it.
    """
    h_digit = 20 * style.scale
    alpha_parts, boxes, out_labels, out_lines = [], [], [], []
    y = 0.0
    for n, (line, line_labels) in enumerate(zip(digits, labels)):
        x = rng.uniform(0, 0.5) * h_digit
        for digit, label in zip(line, line_labels):
            glyph = _enlarge(digit, style.scale * rng.uniform(0.9, 1.1))
            gh, gw = glyph.shape
            top = y + (h_digit - gh) / 2 + rng.uniform(-0.08, 0.08) * h_digit
            alpha_parts.append((glyph, round(x), round(top)))
            x += gw + rng.uniform(0.15, 0.6) * h_digit
            out_labels.append(int(label))
            out_lines.append(n)
        y += h_digit * rng.uniform(1.4, 1.9)
    # left, top, right, bottom; a fixed size places the writing anywhere in it instead
    margin = [round((0.1 if size else rng.uniform(0.4, 1.2)) * h_digit) for _ in range(4)]
    min_x = min(x for _, x, _ in alpha_parts)
    min_y = min(t for _, _, t in alpha_parts)
    width = max(x + g.shape[1] for g, x, _ in alpha_parts) - min_x + margin[0] + margin[2]
    height = max(t + g.shape[0] for g, _, t in alpha_parts) - min_y + margin[1] + margin[3]
    shift_x, shift_y = margin[0] - min_x, margin[1] - min_y
    if size is not None:
        if size[0] < width or size[1] < height:
            raise ValueError(f"the writing needs {width}x{height} pixels, more than {size[0]}x{size[1]}")
        shift_x += int(rng.integers(0, size[0] - width + 1))
        shift_y += int(rng.integers(0, size[1] - height + 1))
        width, height = size
    alpha = np.zeros((height, width), np.float32)
    for glyph, x, top in alpha_parts:
        x, top = x + shift_x, top + shift_y
        region = alpha[top:top + glyph.shape[0], x:x + glyph.shape[1]]
        np.maximum(region, glyph, out=region)
        ys, xs = np.nonzero(glyph > INK_ALPHA)
        boxes.append((x + int(xs.min()), top + int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)))
    image = _photograph(alpha, style, rng)
    text = "\n".join("".join(str(lab) for lab, ln in zip(out_labels, out_lines) if ln == n)
                     for n in range(len(digits)))
    return Sample(image, boxes, out_labels, out_lines, text)


def _enlarge(digit: np.ndarray, scale: float) -> np.ndarray:
    """A digit's tight crop, enlarged smoothly: float ink coverage in [0, 1]."""
    ys, xs = np.nonzero(digit)
    crop = digit[ys.min():ys.max() + 1, xs.min():xs.max() + 1].astype(np.float32) / 255
    crop = np.pad(crop, 1)  # room for the smooth edge
    size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
    return np.clip(cv2.resize(crop, size, interpolation=cv2.INTER_CUBIC), 0, 1)


def _photograph(alpha: np.ndarray, style: Style, rng: np.random.Generator) -> np.ndarray:
    """Ink coverage (H, W) -> an RGB photo of it under the style's conditions."""
    h, w = alpha.shape
    if style.dark_on_light:
        paper = rng.uniform(175, 245) * np.array([1.0, rng.uniform(0.96, 1.0), rng.uniform(0.88, 1.0)])
        ink = np.array([30, 50, 150]) * rng.uniform(0.6, 1.1) if style.blue_ink else np.full(3, rng.uniform(10, 80))
    else:
        paper = rng.uniform(15, 70) * np.array([rng.uniform(0.7, 1.0), 1.0, rng.uniform(0.8, 1.0)])
        ink = np.full(3, rng.uniform(170, 240))
    if style.blur > 0:
        alpha = cv2.GaussianBlur(alpha, (0, 0), style.blur * style.scale)
    img = paper * (1 - alpha[..., None]) + ink * alpha[..., None]  # (H, W, 3)
    if style.light > 0:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        angle = rng.uniform(0, 2 * np.pi)
        ramp = np.cos(angle) * xx / w + np.sin(angle) * yy / h
        ramp = (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6)
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        spot = ((xx - cx) ** 2 + (yy - cy) ** 2) / (w * w + h * h)
        field = 1 - style.light * (0.7 * ramp + 0.3 * spot / max(float(spot.max()), 1e-6))
        img = img * field[..., None]
    if style.noise > 0:
        img = img + rng.normal(0, style.noise, (h, w, 1)) + rng.normal(0, style.noise / 3, (h, w, 3))
    img = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    if style.jpeg is not None:
        ok, buf = cv2.imencode(".jpg", img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, style.jpeg])
        img = cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1]
    return np.ascontiguousarray(img)
