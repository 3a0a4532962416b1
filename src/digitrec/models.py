"""Digit classifiers and their registry.

Every model takes a float tensor (B, 1, 28, 28) with pixels in [0, 1] (white ink on black, as in
MNIST) and returns logits (B, 10). Normalisation happens inside the model, so callers never repeat it.

    >>> from digitrec.models import create_model, list_models
    >>> list_models()
    ['accurate', 'baseline', 'deep', 'fast']
    >>> create_model("fast")(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from digitrec.errors import UsageError

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


@dataclass(frozen=True)
class Recipe:
    """How a model is trained unless the command line says otherwise."""

    epochs: int  # passes over the training images
    batch_size: int  # images per optimiser step
    lr: float  # peak learning rate
    schedule: str  # "onecycle" (warm up, then cosine down) or "constant"
    augment: bool  # random affine, elastic and stroke-width changes on training batches
    label_smoothing: float  # cross-entropy label smoothing
    weight_decay: float  # decoupled weight decay (AdamW); 0 means plain Adam
    description: str  # one line for `digitrec models` and the README


_REGISTRY: dict[str, tuple[Callable[[], nn.Module], Recipe]] = {}


def register_model(**recipe):
    """Decorator: register a function that builds a model, with the recipe it is trained with."""

    def wrap(fn: Callable[[], nn.Module]):
        _REGISTRY[fn.__name__] = (fn, Recipe(**recipe))
        return fn

    return wrap


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def get_recipe(name: str) -> Recipe:
    _check_name(name)
    return _REGISTRY[name][1]


def create_model(name: str) -> nn.Module:
    """Build the named architecture with fresh weights."""
    _check_name(name)
    return _REGISTRY[name][0]()


def _check_name(name: str) -> None:
    if name not in _REGISTRY:
        raise UsageError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}")


class Normalize(nn.Module):
    """Maps [0, 1] pixels to MNIST's zero mean and unit variance."""

    def forward(self, x):
        return (x - MNIST_MEAN) / MNIST_STD


def conv_bn(cin: int, cout: int, kernel: int = 3, stride: int = 1, pad: bool = True) -> list[nn.Module]:
    """Conv, batch norm, ReLU; `pad` keeps the size (at stride 1), else the conv shrinks it by kernel - 1."""
    # No conv bias: the batch norm right after it has its own.
    return [nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2 if pad else 0, bias=False),
            nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


@register_model(epochs=15, batch_size=128, lr=1e-3, schedule="constant", augment=False,
                label_smoothing=0.0, weight_decay=0.0,
                description="the Keras tutorial network and recipe (Adam 1e-3, batch 128, 15 epochs)")
def baseline() -> nn.Module:
    return nn.Sequential(
        Normalize(),
        nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),  # (B, 32, 13, 13)
        nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),  # (B, 64, 5, 5)
        nn.Flatten(), nn.Dropout(0.5),
        nn.Linear(64 * 5 * 5, 10),
    )


@register_model(epochs=1, batch_size=128, lr=6e-3, schedule="onecycle", augment=False,
                label_smoothing=0.0, weight_decay=0.0,
                description="a small CNN (stride-2 convs, batch norm): 99% in one epoch, seconds on a laptop CPU")
def fast() -> nn.Module:
    return nn.Sequential(
        Normalize(),
        *conv_bn(1, 16, kernel=5, stride=2),  # (B, 16, 14, 14)
        *conv_bn(16, 32),  # (B, 32, 14, 14)
        *conv_bn(32, 64, stride=2),  # (B, 64, 7, 7)
        *conv_bn(64, 64, stride=2),  # (B, 64, 4, 4)
        nn.Flatten(),
        nn.Linear(64 * 4 * 4, 10),
    )


@register_model(epochs=12, batch_size=128, lr=4e-3, schedule="onecycle", augment=True,
                label_smoothing=0.1, weight_decay=5e-4,
                description="batch-norm CNN trained with augmentation: 99.5% in 12 epochs (default)")
def accurate() -> nn.Module:
    return _pooled_cnn(second_conv=False)


@register_model(epochs=30, batch_size=128, lr=4e-3, schedule="onecycle", augment=True,
                label_smoothing=0.1, weight_decay=5e-4,
                description="accurate with a second conv at 14x14, trained 30 epochs: the bundled model's members")
def deep() -> nn.Module:
    return _pooled_cnn(second_conv=True)


@register_model(epochs=30, batch_size=128, lr=4e-3, schedule="onecycle", augment=True,
                label_smoothing=0.1, weight_decay=5e-4,
                description="no pooling: unpadded 3x3 convs, strided 5x5 convs to downsample; 30 epochs")
def strided() -> nn.Module:
    return nn.Sequential(
        Normalize(),
        *conv_bn(1, 32, pad=False), *conv_bn(32, 32, pad=False),  # (B, 32, 24, 24)
        *conv_bn(32, 32, kernel=5, stride=2),  # (B, 32, 12, 12)
        nn.Dropout(0.4),
        *conv_bn(32, 64, pad=False), *conv_bn(64, 64, pad=False),  # (B, 64, 8, 8)
        *conv_bn(64, 64, kernel=5, stride=2),  # (B, 64, 4, 4)
        nn.Dropout(0.4),
        *conv_bn(64, 128, kernel=4, pad=False),  # (B, 128, 1, 1)
        nn.Flatten(),
        nn.Dropout(0.4),
        nn.Linear(128, 10),
    )


def _pooled_cnn(second_conv: bool) -> nn.Module:
    """Three conv stages with max-pooling, 28 -> 14 -> 7 -> 4, then dropout and one linear layer."""
    return nn.Sequential(
        Normalize(),
        *conv_bn(1, 32, kernel=5),  # (B, 32, 28, 28)
        nn.MaxPool2d(2),  # (B, 32, 14, 14)
        *conv_bn(32, 64),
        *(conv_bn(64, 64) if second_conv else []),
        nn.MaxPool2d(2),  # (B, 64, 7, 7)
        *conv_bn(64, 128),
        nn.MaxPool2d(2, ceil_mode=True),  # (B, 128, 4, 4)
        nn.Flatten(),
        nn.Dropout(0.3),
        nn.Linear(128 * 4 * 4, 10),
    )


class Ensemble(nn.Module):
    """Several trained models voting: the mean of their probabilities, returned as log-probabilities.

    Log-probabilities work wherever logits do (softmax gives the averaged probabilities back).
    """

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x):
        logp = torch.stack([m(x).float().log_softmax(1) for m in self.members])  # (M, B, 10)
        return torch.logsumexp(logp, 0) - math.log(len(self.members))  # (B, 10)


class TemperatureScaled(nn.Module):
    """A trained model whose logits are divided by a temperature fitted on held-out images.

    Label smoothing and ensembling leave probabilities too timid (0.9 for a plain 7); the temperature
    makes a reported confidence of 0.99 mean right 99 times in 100. The predicted digit never changes.
    """

    def __init__(self, model: nn.Module, temperature: float):
        super().__init__()
        self.model = model
        self.temperature = temperature

    def forward(self, x):
        return self.model(x).float() / self.temperature
