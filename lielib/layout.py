"""Tensor layouts: what the axes of an image-like tensor mean.

A layout is data, never a guess from a shape. Three kinds exist:

* ``NCHW``: ``(B, C, H, W)``, the torch convention for images and CNN features.
* ``NHWC``: ``(B, H, W, C)``, channels last (inside ConvNeXt blocks, Swin stages).
* ``tokens``: ``(B, P + H*W, C)``, a sequence whose first ``P`` entries are prefix
  tokens (class, distillation, register tokens) followed by a row-major ``H x W`` grid
  of patch tokens (ViT, DeiT, Mixer, ResMLP).

Spatial actions move only the grid part of a tensor; prefix tokens carry no spatial
position and are left as they are.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch

__all__ = ["Layout", "from_nchw", "to_nchw"]

_KINDS = ("NCHW", "NHWC", "tokens")


@dataclass(frozen=True)
class Layout:
    """How an image-like tensor is laid out.

    Args:
        kind: ``"NCHW"``, ``"NHWC"`` or ``"tokens"``.
        num_prefix_tokens: for ``tokens``, how many non-spatial tokens lead the sequence.
        grid: for ``tokens``, the ``(H, W)`` grid of the spatial tokens; ``None`` means a
            square grid inferred from the sequence length.

    >>> Layout.parse("NHWC"), str(Layout.tokens(1, (2, 3)))
    (Layout(kind='NHWC', num_prefix_tokens=0, grid=None), 'tokens(prefix=1, grid=(2, 3))')
    """

    kind: str = "NCHW"
    num_prefix_tokens: int = 0
    grid: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(
                f"unknown layout kind {self.kind!r}; use one of {_KINDS} "
                "(or Layout.tokens(num_prefix_tokens, grid) for token sequences)"
            )
        if not _is_int(self.num_prefix_tokens):
            raise TypeError(f"num_prefix_tokens must be an int, got {self.num_prefix_tokens!r}")
        object.__setattr__(self, "num_prefix_tokens", int(self.num_prefix_tokens))
        if self.grid is not None:
            grid = tuple(self.grid) if isinstance(self.grid, (tuple, list)) else ()
            if len(grid) != 2 or not all(_is_int(g) and g >= 1 for g in grid):
                raise TypeError(f"grid must be two positive ints (H, W), got {self.grid!r}")
            object.__setattr__(self, "grid", (int(grid[0]), int(grid[1])))
        if self.kind != "tokens" and (self.num_prefix_tokens or self.grid is not None):
            raise ValueError("num_prefix_tokens and grid only apply to the 'tokens' layout")
        if self.num_prefix_tokens < 0:
            raise ValueError("num_prefix_tokens must be >= 0")

    @classmethod
    def tokens(cls, num_prefix_tokens: int = 0, grid: tuple[int, int] | None = None) -> Layout:
        """A token layout ``(B, P + H*W, C)``.

        >>> Layout.tokens(1, (14, 14))
        Layout(kind='tokens', num_prefix_tokens=1, grid=(14, 14))
        """
        return cls("tokens", num_prefix_tokens, grid)

    @classmethod
    def parse(cls, spec: str | Layout) -> Layout:
        """Turn ``"NCHW"``, ``"NHWC"``, ``"NLC"``/``"tokens"`` or a ``Layout`` into a ``Layout``."""
        if isinstance(spec, Layout):
            return spec
        if not isinstance(spec, str):
            raise TypeError(f"a layout is a string or a Layout, got {type(spec).__name__}")
        key = spec.strip()
        if key.upper() in ("NCHW", "NHWC"):
            return cls(key.upper())
        if key.upper() == "NLC" or key.lower() == "tokens":
            return cls.tokens()
        raise ValueError(
            f"unknown layout {spec!r}; use 'NCHW', 'NHWC', 'NLC' (tokens without prefix) "
            "or Layout.tokens(num_prefix_tokens, grid)"
        )

    def __str__(self) -> str:
        if self.kind != "tokens":
            return self.kind
        return f"tokens(prefix={self.num_prefix_tokens}, grid={self.grid})"


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _token_grid(layout: Layout, length: int) -> tuple[int, int]:
    n = length - layout.num_prefix_tokens
    if n <= 0:
        raise ValueError(
            f"a token tensor of length {length} has no spatial tokens after "
            f"{layout.num_prefix_tokens} prefix tokens"
        )
    if layout.grid is not None:
        h, w = layout.grid
        if h * w != n:
            raise ValueError(
                f"layout grid {layout.grid} needs {h * w} spatial tokens, the tensor has {n} "
                f"(length {length} minus {layout.num_prefix_tokens} prefix tokens)"
            )
        return h, w
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(
            f"{n} spatial tokens do not form a square grid; pass Layout.tokens(prefix, grid=(H, W))"
        )
    return side, side


def to_nchw(x: torch.Tensor, layout: str | Layout) -> tuple[torch.Tensor, torch.Tensor | None]:
    """View ``x`` as an image ``(B, C, H, W)`` plus its prefix tokens ``(B, P, C)`` (or None).

    >>> img, prefix = to_nchw(torch.zeros(2, 1 + 6, 8), Layout.tokens(1, (2, 3)))
    >>> img.shape, prefix.shape
    (torch.Size([2, 8, 2, 3]), torch.Size([2, 1, 8]))
    """
    layout = Layout.parse(layout)
    if layout.kind == "tokens":
        if x.ndim != 3:
            raise ValueError(f"a tokens layout needs a (B, L, C) tensor, got shape {tuple(x.shape)}")
        h, w = _token_grid(layout, x.shape[1])
        p = layout.num_prefix_tokens
        prefix = x[:, :p] if p else None
        grid = x[:, p:].reshape(x.shape[0], h, w, x.shape[2]).permute(0, 3, 1, 2)
        return grid, prefix
    if x.ndim != 4:
        axes = "(B, C, H, W)" if layout.kind == "NCHW" else "(B, H, W, C)"
        raise ValueError(
            f"layout {layout.kind} needs a 4-d {axes} tensor, got shape {tuple(x.shape)}"
        )
    if layout.kind == "NHWC":
        return x.permute(0, 3, 1, 2), None
    return x, None


def from_nchw(
    img: torch.Tensor, prefix: torch.Tensor | None, layout: str | Layout
) -> torch.Tensor:
    """Inverse of :func:`to_nchw`.

    >>> t = torch.randn(2, 5, 5, 3)
    >>> torch.equal(from_nchw(*to_nchw(t, "NHWC"), "NHWC"), t)
    True
    """
    layout = Layout.parse(layout)
    if layout.kind == "NCHW":
        return img
    if layout.kind == "NHWC":
        return img.permute(0, 2, 3, 1)
    b, c, h, w = img.shape
    tokens = img.permute(0, 2, 3, 1).reshape(b, h * w, c)
    if prefix is not None:
        tokens = torch.cat([prefix, tokens], dim=1)
    return tokens
