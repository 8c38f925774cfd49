"""Models of known invariance built from a network: the controls the instrument is calibrated on.

* :class:`GroupAveraged`: ``f_G(x) = mean_{g in G} f(g x)`` over a cyclic group ``C_N`` of
  rotations about the image centre (``N`` a multiple of 4). The quarter turns are
  ``torch.rot90`` (exact: no resampling); the angles in between are bilinear resampling
  (:func:`lielib.get_action` ``"rotate"``, which forward-mode AD can differentiate).
  ``f_G`` is exactly invariant to ``rot90`` for every ``N`` (up to the order of the sum),
  and invariant to rotation by ``2 pi / N`` up to interpolation error; as ``N`` grows it
  tends to the SO(2) average, invariant to every rotation.
* :class:`PixelMean`: a readout of the mean pixel value only, invariant to rotations and
  translations of a digit on a blank background (the trivially invariant control).
* :class:`PixelLinear`: a fixed random linear readout of all pixels, invariant to nothing
  (the negative control; its sensitivity ratio is about 1 by the ratio's construction).

Why the logits are averaged, not the probabilities: every metric of the book reads a
model's logits (on ``output="logits"``) or their softmax. With the logits averaged, both
are invariant functions of the input, and the averaged model's logits are comparable in
kind with the plain network's; averaging probabilities would return ``log mean_g p(g x)``,
a log-probability whose "logit" Lie derivative is that of a log-softmax, not of a logit.

Theory the controls are checked against, for the logits and ``L`` the rotation Lie
derivative (rotations about one centre commute): ``L f_G(x) = mean_g (L f)(g x)``, so
``|L f_G(x)| <= mean_g |L f(g x)|`` per class. Over test digits whose distribution is
invariant to rotation (rotated MNIST), the mean of the right side equals the plain
network's mean, so ``E LEE(f_C4) <= E LEE(f)``; and ``f_{C_2N}`` is the average of
``f_{C_N}`` and its copy turned by ``pi / N``, so ``E LEE(f_C16) <= E LEE(f_C8) <= E LEE(f_C4)``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lielib import get_action

__all__ = ["GROUPS", "GroupAveraged", "PixelLinear", "PixelMean", "rotations"]

GROUPS = {"C4": 4, "C8": 8, "C16": 16}
"""The cyclic groups of the calibration: name -> order ``N``."""


def rotations(x: torch.Tensor, order: int) -> torch.Tensor:
    """Every element of ``C_order`` applied to ``x``: ``(order, B, C, H, W)``.

    Element ``4 j + k`` is the rotation by ``2 pi j / order`` (bilinear, about the image
    centre, reflection padding; ``j = 0`` is the identity) followed by ``k`` quarter turns
    ``torch.rot90(., k, dims=(-2, -1))``.
    """
    if order < 4 or order % 4:
        raise ValueError(f"the group order must be a positive multiple of 4, got {order}")
    if x.ndim != 4 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"rotations need square (B, C, H, W) images, got {tuple(x.shape)}")
    rotate = get_action("rotate")
    out = []
    for j in range(order // 4):
        base = x if j == 0 else rotate.act(x, 2 * math.pi * j / order, stencil="central")
        out += [torch.rot90(base, k, dims=(-2, -1)) for k in range(4)]
    return torch.stack(out)


class GroupAveraged(nn.Module):
    """``f_G(x) = mean_{g in C_N} f(g x)``: the logits of ``model`` averaged over a rotation group.

    Args:
        model: a classifier ``(B, C, H, W) -> (B, K)`` on square images.
        order: ``N``, a multiple of 4 (``C4``: quarter turns only).

    The copies run as one batch of ``N B`` images, so BatchNorm must be in eval mode to
    keep images independent (as every measurement has it).
    """

    def __init__(self, model: nn.Module, order: int) -> None:
        super().__init__()
        if order < 4 or order % 4:
            raise ValueError(f"the group order must be a positive multiple of 4, got {order}")
        self.model = model
        self.order = order

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        copies = rotations(x, self.order)  # (N, B, C, H, W)
        logits = self.model(copies.flatten(0, 1))
        return logits.unflatten(0, (self.order, x.shape[0])).mean(0)

    def extra_repr(self) -> str:
        return f"order={self.order}"


class PixelMean(nn.Module):
    """Logits ``a_c z(x) + b_c`` of the standardised mean pixel ``z = (mean(x) - mu) / sigma``.

    Invariant to any rearrangement of the pixels that keeps their sum: to rotations and
    translations of a digit on a blank background in the continuum. ``a`` and ``b`` are
    standard normal draws from ``seed``, so the logits spread about as much as a trained
    network's first layers would make them; ``mu``, ``sigma`` come from ``reference``
    images (the measured ones).
    """

    def __init__(self, reference: torch.Tensor, *, num_classes: int = 10, seed: int = 0) -> None:
        super().__init__()
        m = reference.flatten(1).mean(1).double()
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("mu", m.mean().float())
        self.register_buffer("sigma", m.std().clamp_min(1e-12).float())
        self.register_buffer("a", torch.randn(num_classes, generator=gen))
        self.register_buffer("b", torch.randn(num_classes, generator=gen))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = (x.flatten(1).mean(1, keepdim=True) - self.mu) / self.sigma
        return z * self.a + self.b


class PixelLinear(nn.Module):
    """Logits ``W (x - mean_ref) / s + b``: a fixed random linear readout of every pixel.

    Invariant to nothing: the negative control. ``W`` has standard normal entries scaled
    by ``1 / sqrt(C H W)``, and ``s`` makes the logits of the ``reference`` images spread
    with standard deviation 1, as :class:`PixelMean`'s do.
    """

    def __init__(self, reference: torch.Tensor, *, num_classes: int = 10, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        d = reference[0].numel()
        w = torch.randn(num_classes, d, generator=gen) / math.sqrt(d)
        b = torch.randn(num_classes, generator=gen)
        mean = reference.flatten(1).mean(0)
        spread = ((reference.flatten(1) - mean) @ w.T).std().clamp_min(1e-12)
        self.register_buffer("mean", mean)
        self.register_buffer("w", w / spread)
        self.register_buffer("b", b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.flatten(1) - self.mean) @ self.w.T + self.b
