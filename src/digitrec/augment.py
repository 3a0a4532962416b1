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
