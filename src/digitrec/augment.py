"""Random distortions of whole batches of digits, done as tensor ops (no per-image Python loop).

Handwriting varies in position, size, slant, wobble and pen width; so do these distortions:
an affine warp (shift, scale, rotation, shear), a smooth elastic field, and a soft dilation or
erosion of the strokes.

    >>> g = torch.Generator().manual_seed(0)
    >>> augment_batch(torch.rand(8, 1, 28, 28), g).shape
    torch.Size([8, 1, 28, 28])
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Distortion:
    max_rotation_deg: float = 12.0  # each way
    max_scale: float = 0.15  # size changes by up to this fraction each way
    max_shear: float = 0.2  # horizontal shear, as a fraction of height
    max_shift_px: float = 2.5  # each way, in 28x28 pixels
    elastic_px: float = 1.5  # typical displacement of the elastic field, in pixels
    elastic_fraction: float = 0.5  # share of the batch that gets the elastic field
    thickness_fraction: float = 0.5  # share of the batch whose stroke width changes


def _uniform(n: int, low: float, high: float, g: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=g, device=g.device)


def augment_batch(x: torch.Tensor, g: torch.Generator, d: Distortion = Distortion()) -> torch.Tensor:
    """Distort each image of `x` (B, 1, H, W), floats in [0, 1], differently; returns a new tensor.

    The random draws come from `g`, which lives on the device of `x`."""
    b, _, h, w = x.shape
    angle = _uniform(b, -d.max_rotation_deg, d.max_rotation_deg, g) * math.pi / 180
    scale = _uniform(b, 1 - d.max_scale, 1 + d.max_scale, g)
    shear = _uniform(b, -d.max_shear, d.max_shear, g)
    shift = _uniform(2 * b, -d.max_shift_px, d.max_shift_px, g).view(b, 2) * 2 / torch.tensor([w, h], device=g.device)

    # theta maps output coordinates to input ones, hence the inverse scale.
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([
        torch.stack([cos, -sin + shear * cos, shift[:, 0]], dim=1),
        torch.stack([sin, cos + shear * sin, shift[:, 1]], dim=1),
    ], dim=1)  # (B, 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # (B, H, W, 2)

    # Elastic: coarse random displacements, smoothly upsampled to the full grid.
    coarse = torch.randn(b, 2, 4, 4, generator=g, device=g.device) * (d.elastic_px * 2 / h)
    coarse *= (torch.rand(b, 1, 1, 1, generator=g, device=g.device) < d.elastic_fraction)
    field = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True)  # (B, 2, H, W)
    grid = grid + field.permute(0, 2, 3, 1)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    # Stroke width: blend towards a 3x3 dilation (thicker) or erosion (thinner) by a random amount.
    amount = torch.rand(b, 1, 1, 1, generator=g, device=g.device)
    amount *= torch.rand(b, 1, 1, 1, generator=g, device=g.device) < d.thickness_fraction
    thicker = torch.rand(b, 1, 1, 1, generator=g, device=g.device) < 0.6
    amount = torch.where(thicker, amount, amount * 0.5)  # full erosion would erase 2-pixel strokes
    dilated = F.max_pool2d(out, 3, stride=1, padding=1)
    eroded = -F.max_pool2d(-out, 3, stride=1, padding=1)
    target = torch.where(thicker, dilated, eroded)
    return (out + amount * (target - out)).clamp_(0, 1)


# --------------------------------------------------------------------------------- writing styles

# How people outside MNIST's population write some digits (shares of each digit restyled, sizes as
# fractions of the digit's ink height).
FLAG_ONE = 0.5  # share of 1s given the continental up-stroke (a flag from the top, down to the left) ...
FLAG_LENGTH = (0.25, 0.65)  # ... this long ...
FLAG_ANGLE_DEG = (40.0, 65.0)  # ... falling this steeply below the horizontal (flatter ones, once rotated, are 7s' bars)
FOOT_ONE = 0.3  # share of flagged 1s that also stand on a foot (a bar under them) ...
FOOT_WIDTH = (0.35, 0.75)  # ... this wide
CROSS_SEVEN = 0.3  # share of 7s with a bar across the stem ...
CROSS_WIDTH = (0.3, 0.55)  # ... this wide ...
CROSS_HEIGHT = (0.4, 0.6)  # ... this far down the digit
STYLE_INK = 0.3  # a pixel above this is ink, when the digit's outline is measured


def strokes(ax, ay, bx, by, radius, on, h: int, w: int) -> torch.Tensor:
    """Round-ended strokes from (ax, ay) to (bx, by) of the given radius where `on`, each tensor (B, S),
    in pixel coordinates (a pixel's centre at +0.5): (B, h, w) ink in [0, 1], antialiased."""
    vs = torch.arange(h, dtype=torch.float32, device=ax.device)[None, None, :, None] + 0.5
    us = torch.arange(w, dtype=torch.float32, device=ax.device)[None, None, None, :] + 0.5
    e = lambda t: t[..., None, None]  # noqa: E731
    dx, dy = e(bx - ax), e(by - ay)
    length2 = (dx * dx + dy * dy).clamp(min=1e-6)
    t = (((us - e(ax)) * dx + (vs - e(ay)) * dy) / length2).clamp(0, 1)
    dist = torch.hypot(us - e(ax) - t * dx, vs - e(ay) - t * dy)  # (B, S, h, w)
    ink = (e(radius) + 0.5 - dist).clamp(0, 1) * e(on.float())
    return ink.max(dim=1).values


def restyle(x: torch.Tensor, labels: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Write some 1s and 7s of `x` (B, 1, H, W), floats in [0, 1], as much of the world writes them: a 1
    with a long up-stroke (and sometimes a foot), a 7 crossed through its stem. Other digits, and
    images with no ink, are returned as they are; the strokes added match each digit's pen width.

    >>> restyle(ones, torch.ones(len(ones), dtype=torch.long), g)   # flags on half of them
    """
    b, _, h, w = x.shape
    dev = x.device
    u = lambda lo, hi: lo + (hi - lo) * torch.rand(b, generator=g, device=dev)  # noqa: E731
    ink = x[:, 0] > STYLE_INK  # (B, h, w)
    rows = ink.any(dim=2)
    has = rows.any(dim=1)
    ys = torch.arange(h, device=dev, dtype=torch.float32)
    xs = torch.arange(w, device=dev, dtype=torch.float32) + 0.5
    y0 = torch.where(rows, ys, float(h)).min(dim=1).values  # first inked row
    y1 = torch.where(rows, ys, -1.0).max(dim=1).values + 1  # last inked row + 1
    height = (y1 - y0).clamp(min=1)
    # Pen width: ink per row of the digit (a 1 is one stroke wide everywhere).
    width = (x[:, 0].sum(dim=(1, 2)) / height).clamp(1.0, 0.25 * h)

    def centre_x(a, z):  # mean column of the ink in rows a..z (each (B,)), or the picture's middle
        band = ((ys[None] >= a[:, None]) & (ys[None] < z[:, None]))[:, :, None] & ink  # (B, h, w)
        n = band.sum(dim=(1, 2)).clamp(min=1)
        return torch.where(band.any(dim=(1, 2)), (band * xs).sum(dim=(1, 2)) / n, torch.full_like(n, w / 2.0))

    top_x, bottom_x = centre_x(y0, y0 + 2), centre_x(y1 - 2, y1)
    one, seven = (labels == 1) & has, (labels == 7) & has
    flag = one & (torch.rand(b, generator=g, device=dev) < FLAG_ONE)
    foot = flag & (torch.rand(b, generator=g, device=dev) < FOOT_ONE)
    cross = seven & (torch.rand(b, generator=g, device=dev) < CROSS_SEVEN)
    r = width / 2
    ax, ay = top_x, y0 + r * 0.5
    angle = torch.deg2rad(u(*FLAG_ANGLE_DEG))
    length = u(*FLAG_LENGTH) * height
    bx, by = ax - length * torch.cos(angle), ay + length * torch.sin(angle)
    foot_w = u(*FOOT_WIDTH) * height
    fy = y1 - r * 0.5
    cy = y0 + u(*CROSS_HEIGHT) * height
    stem_x = centre_x(cy - 1, cy + 1)
    cross_w = u(*CROSS_WIDTH) * height
    tilt = u(-0.08, 0.08) * cross_w
    segs = [  # (ax, ay, bx, by, on), each (B,)
        (ax, ay, bx, by, flag),
        (bottom_x - foot_w / 2, fy, bottom_x + foot_w / 2, fy, foot),
        (stem_x - cross_w / 2, cy - tilt, stem_x + cross_w / 2, cy + tilt, cross),
    ]
    stack = lambda i: torch.stack([s[i] for s in segs], dim=1)  # noqa: E731
    added = strokes(stack(0), stack(1), stack(2), stack(3), r[:, None].expand(-1, len(segs)), stack(4), h, w)
    level = torch.where(ink, x[:, 0], 0).amax(dim=(1, 2)).clamp(min=STYLE_INK)  # the pen's darkness
    return torch.maximum(x, (added * level[:, None, None])[:, None])
