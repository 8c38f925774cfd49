"""Rotated MNIST, rebuilt: the benchmark of Larochelle et al. (2007), ``mnist_rotation_new``.

This is a *rebuild*, not the original files (which no package here ships): like the
benchmark, 12,000 training and 50,000 test digits are drawn from MNIST and each is rotated
by an angle ``theta ~ U[0, 2 pi)``; the draws are seeded, so a seed names one dataset.

How the digits are chosen. The 70,000 MNIST digits form one pool (indices ``0..59999``
are MNIST's training set, ``60000..69999`` its test set). A seeded permutation of the pool
is cut into three disjoint parts::

    perm[:12000]        -> rotated training split
    perm[12000:62000]   -> rotated test split
    perm[62000:]        -> 8,000 held-out digits, left upright, for MAE pretraining

so the pretraining digits are disjoint from the rotated test (and training) digits by
construction; :func:`split_sources` exposes the indices so that tests can check it.

Convention:
    * A digit is rotated counter-clockwise (as displayed, rows downwards) by ``theta``
      radians about the image centre: bilinear interpolation, zeros outside the image,
      ``align_corners=False``; images are float32 in ``[0, 1]``, shaped ``(N, 1, 28, 28)``.
    * Angles come from ``numpy.random.default_rng([seed, k])`` with ``k = 1`` (train)
      and ``k = 2`` (test); the permutation from ``k = 0``. A subset of ``size`` images is
      the first ``size`` of the split, so smaller runs see a prefix of the larger ones.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..data import load_idx

__all__ = [
    "ROTATED_MNIST_SIZES",
    "RotatedMNIST",
    "load_pretraining_digits",
    "load_rotated_mnist",
    "load_upright_digits",
    "rotate_digits",
    "split_sources",
]

ROTATED_MNIST_SIZES = {"train": 12_000, "test": 50_000}
_POOL = 70_000
_STREAM = {"perm": 0, "train": 1, "test": 2}


@dataclass(frozen=True)
class RotatedMNIST:
    """One split of rotated MNIST.

    Attributes:
        images: float32 ``(N, 1, 28, 28)`` in ``[0, 1]``.
        labels: int64 ``(N,)``, digits 0..9.
        angles: float64 ``(N,)``, radians in ``[0, 2 pi)``.
        source: int64 ``(N,)``, indices into the MNIST pool (train then test).
    """

    images: torch.Tensor
    labels: torch.Tensor
    angles: torch.Tensor
    source: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


def _pool(root: str | os.PathLike | None) -> tuple[torch.Tensor, torch.Tensor]:
    """All 70,000 MNIST digits: uint8 ``(70000, 28, 28)`` and labels."""
    xs, ys = zip(*(load_idx("mnist", s, root=root) for s in ("train", "test")))
    images, labels = torch.cat(xs), torch.cat(ys)
    if len(images) != _POOL:
        raise ValueError(f"expected {_POOL} MNIST digits (60k train + 10k test), got {len(images)}")
    return images, labels


def split_sources(seed: int = 0) -> dict[str, torch.Tensor]:
    """Pool indices of each part: ``train`` (12,000), ``test`` (50,000), ``heldout`` (8,000).

    ``perm = rng([seed, 0]).permutation(70000)`` cut at 12,000 and 62,000.
    """
    perm = np.random.default_rng([seed, _STREAM["perm"]]).permutation(_POOL)
    n_train, n_test = ROTATED_MNIST_SIZES["train"], ROTATED_MNIST_SIZES["test"]
    parts = {
        "train": perm[:n_train],
        "test": perm[n_train : n_train + n_test],
        "heldout": perm[n_train + n_test :],
    }
    return {k: torch.from_numpy(v.astype(np.int64)) for k, v in parts.items()}


def rotate_digits(images: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate each image counter-clockwise by its angle (radians) about the centre.

    ``out(p) = img(A p)``, ``A = [[cos t, -sin t], [sin t, cos t]]`` in (u right, v down)
    coordinates about the centre: the content turns counter-clockwise as displayed.

    Args:
        images: ``(N, 28, 28)`` uint8 (scaled to ``[0, 1]``) or ``(N, 1, H, W)`` float.
        angles: ``(N,)`` radians.

    Returns:
        float32 ``(N, 1, H, W)``.
    """
    if images.ndim == 3:
        images = images.unsqueeze(1)
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"expected (N, H, W) or (N, 1, H, W) digits, got {tuple(images.shape)}")
    if len(angles) != len(images):
        raise ValueError(f"{len(images)} images but {len(angles)} angles")
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    a = angles.to(torch.float64)
    c, s = torch.cos(a), torch.sin(a)
    # affine_grid maps output (u, v) (u right, v down) to input coordinates A p; with v
    # pointing down, a point q of the input appears at A^-1 q: counter-clockwise on screen.
    theta = torch.stack(
        [
            torch.stack([c, -s, torch.zeros_like(a)], -1),
            torch.stack([s, c, torch.zeros_like(a)], -1),
        ],
        dim=1,
    ).float()
    out = []
    for i in range(0, len(x), 4096):
        grid = F.affine_grid(theta[i : i + 4096], list(x[i : i + 4096].shape), align_corners=False)
        out.append(
            F.grid_sample(
                x[i : i + 4096], grid, mode="bilinear", padding_mode="zeros", align_corners=False
            )
        )
    return torch.cat(out).clamp_(0.0, 1.0)


def load_rotated_mnist(
    split: str,
    *,
    seed: int = 0,
    size: int | None = None,
    root: str | os.PathLike | None = None,
) -> RotatedMNIST:
    """A split of the rebuilt rotated MNIST.

    Args:
        split: ``"train"`` (12,000 digits) or ``"test"`` (50,000 digits).
        seed: names the dataset (permutation and angles).
        size: keep only the first ``size`` digits of the split (same digits and angles
            as the full split).
        root: MNIST data root, see :func:`lielib.book.data.data_root`.

    Returns:
        A :class:`RotatedMNIST`.
    """
    if split not in ROTATED_MNIST_SIZES:
        raise ValueError(f"unknown split {split!r}; choose 'train' or 'test'")
    full = ROTATED_MNIST_SIZES[split]
    n = full if size is None else int(size)
    if not 0 < n <= full:
        raise ValueError(f"size must be in 1..{full} for the {split} split, got {size}")
    angles = np.random.default_rng([seed, _STREAM[split]]).uniform(0.0, 2 * math.pi, full)[:n]
    source = split_sources(seed)[split][:n]
    images, labels = _pool(root)
    angles_t = torch.from_numpy(angles)
    return RotatedMNIST(
        images=rotate_digits(images[source], angles_t),
        labels=labels[source].clone(),
        angles=angles_t,
        source=source,
    )


def load_pretraining_digits(
    *, seed: int = 0, size: int | None = None, root: str | os.PathLike | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The 8,000 upright held-out digits for MAE pretraining (disjoint from both splits).

    Returns:
        float32 ``(N, 1, 28, 28)`` in ``[0, 1]`` and int64 labels (unused by MAE).
    """
    held = split_sources(seed)["heldout"]
    n = len(held) if size is None else int(size)
    if not 0 < n <= len(held):
        raise ValueError(f"size must be in 1..{len(held)} for the pretraining digits, got {size}")
    images, labels = _pool(root)
    idx = held[:n]
    return images[idx].unsqueeze(1).float() / 255.0, labels[idx].clone()


def load_upright_digits(
    split: str, *, seed: int = 0, size: int | None = None, root: str | os.PathLike | None = None
) -> torch.Tensor:
    """The MNIST digits a split was made from, upright: float32 ``(N, 1, 28, 28)`` in ``[0, 1]``.

    ``split`` is ``"train"``, ``"test"`` or ``"heldout"``; the first ``size`` digits, in the
    split's order. The upright test digits are unseen by MAE pretraining (validation).
    """
    parts = split_sources(seed)
    if split not in parts:
        raise ValueError(f"unknown split {split!r}; choose one of {sorted(parts)}")
    idx = parts[split] if size is None else parts[split][: int(size)]
    if size is not None and not 0 < int(size) <= len(parts[split]):
        raise ValueError(f"size must be in 1..{len(parts[split])} for {split}, got {size}")
    images, _ = _pool(root)
    return images[idx].unsqueeze(1).float() / 255.0
