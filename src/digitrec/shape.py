"""One digit's ink -> MNIST's form: tight crop, stroke width, fitted into 20x20, centred by mass in 28x28."""

from __future__ import annotations

import cv2
import numpy as np

# MNIST's form, measured on its test set.
FIELD, BOX = 28, 20  # the digit fits a 20x20 box in a 28x28 field
CENTRE = 14.0  # centre of mass, in pixel indices
STROKE_PIXEL = 0.35  # pixels this bright (of the brightest) are strokes; half of them are saturated
STROKE_RATIO = 0.092  # median stroke width / longer side of the digit
STROKE_RANGE = (0.055, 0.18)  # widths outside these ratios are brought to the median
CROP_MAX_SIDE = 160  # digits are reshaped at no more than 8x their MNIST size


def to_mnist(soft: np.ndarray) -> np.ndarray:
    """One digit's ink (float, 0 background to 1 full stroke, any size) -> 28x28 uint8 in MNIST's form.

    Ink that does not survive being brought to MNIST's stroke width (a dot) gives an empty field,
    which readers take as no digit.

    Tight crop, stroke width brought into MNIST's range, fitted into 20x20 keeping the aspect ratio with
    anti-aliasing, then placed so that its centre of mass is at the centre of the 28x28 field.

    >>> stroke = np.zeros((200, 120), np.float32); stroke[10:190, 55:65] = 1   # a "1"
    >>> to_mnist(stroke).shape
    (28, 28)
    """
    soft = _tight(np.asarray(soft, np.float32))
    if soft.size == 0:
        return np.zeros((FIELD, FIELD), np.uint8)
    longest = max(soft.shape)
    if longest > CROP_MAX_SIDE:
        f = CROP_MAX_SIDE / longest
        soft = cv2.resize(soft, (max(1, round(soft.shape[1] * f)), max(1, round(soft.shape[0] * f))),
                          interpolation=cv2.INTER_AREA)
    soft = _tight(_mnist_stroke(soft))
    if soft.size == 0 or not soft.max() > 0:  # thinning left no ink: a dot, or a speck of noise
        return np.zeros((FIELD, FIELD), np.uint8)
    h, w = soft.shape
    f = BOX / max(h, w)
    size = (max(1, round(w * f)), max(1, round(h * f)))
    fitted = cv2.resize(soft, size, interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)
    if not fitted.max() > 0:
        return np.zeros((FIELD, FIELD), np.uint8)
    # Half of MNIST's stroke pixels are saturated; give the strokes the same grey levels.
    strokes = fitted[fitted > STROKE_PIXEL * fitted.max()]
    fitted = np.clip(fitted / max(float(np.median(strokes)), 1e-6) * 255 + 0.5, 0, 255).astype(np.uint8)
    out = np.zeros((FIELD, FIELD), np.uint8)
    total = float(fitted.sum())
    if total == 0:
        return out
    ys, xs = np.indices(fitted.shape)
    cy, cx = (ys * fitted).sum() / total, (xs * fitted).sum() / total
    top, left = round(CENTRE - cy), round(CENTRE - cx)
    # Paste with clipping: an off-centre mass may push part of the box outside, as in MNIST.
    sy0, sx0 = max(0, -top), max(0, -left)
    dy0, dx0 = max(0, top), max(0, left)
    hh = min(fitted.shape[0] - sy0, FIELD - dy0)
    ww = min(fitted.shape[1] - sx0, FIELD - dx0)
    out[dy0:dy0 + hh, dx0:dx0 + ww] = fitted[sy0:sy0 + hh, sx0:sx0 + ww]
    return out


def _tight(soft: np.ndarray, eps: float = 0.05) -> np.ndarray:
    ys, xs = np.nonzero(soft > eps)
    if not len(ys):
        return soft[:0, :0]
    return soft[ys.min():ys.max() + 1, xs.min():xs.max() + 1]


def stroke_width(soft: np.ndarray) -> float:
    """Typical stroke width in pixels: twice the inked area over its outline (exact for long strokes)."""
    mask = (soft > 0.5).astype(np.uint8)
    area = int(mask.sum())
    if not area:
        return 0.0
    edge = area - int(cv2.erode(mask, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0).sum())
    return 2 * area / max(edge, 1)


def _mnist_stroke(soft: np.ndarray) -> np.ndarray:
    """Thicken a hairline or thin a marker stroke to MNIST's median width, relative to the digit's size."""
    longest = max(soft.shape)
    width = stroke_width(soft)
    ratio = width / longest
    if STROKE_RANGE[0] <= ratio <= STROKE_RANGE[1] or width == 0:
        return soft
    # Growing every stroke by d pixels also grows the digit by d: solve (width + d) / (longest + d) = target.
    d = (STROKE_RATIO * longest - width) / (1 - STROKE_RATIO)
    k = int(round(abs(d)))
    if k < 1:
        return soft
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k + 1, k + 1))
    if d > 0:
        soft = cv2.copyMakeBorder(soft, k, k, k, k, cv2.BORDER_CONSTANT, value=0)
        return cv2.dilate(soft, kernel)
    return cv2.erode(soft, kernel)
