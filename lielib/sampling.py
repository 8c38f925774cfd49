"""Bilinear resampling that supports forward-mode AD and double backward.

``F.grid_sample`` has no forward-mode derivative, so lielib resamples with four
``gather`` calls. Values equal ``F.grid_sample(x, grid, mode="bilinear",
padding_mode="reflection", align_corners=True)``.

Convention:
    * Normalised coordinates ``(u, v)`` in ``[-1, 1]``: ``u`` runs along the width
      (left to right), ``v`` along the height (top to bottom), ``align_corners=True``
      (``-1`` and ``1`` are the centres of the corner pixels).
    * A ``(2, 3)`` matrix ``theta`` maps output coordinates to sampling coordinates,
      ``(u_in, v_in) = theta @ (u_out, v_out, 1)``, as ``F.affine_grid`` does.
    * Out-of-range samples are reflected about the centres of the border pixels.
    * Half-precision images and matrices are computed in float32 (the grid and the
      weights) and the result is rounded back to the image's dtype.

The stencil at t = 0:
    At the identity every sampling point sits on a pixel centre, where bilinear
    interpolation has a kink, so the derivative depends on which cell the point is
    assigned to.

    * ``"paper"``: the cell is ``floor`` of the coordinates computed in float32 by
      ``F.affine_grid``, exactly as the paper's code does. Rounding puts some pixel
      centres just below an integer, so the derivative is a forward difference in most
      columns and a backward difference in others (36 of 224 columns at 224 px, 3 of 28
      at 28 px, none at 32 px).
    * ``"central"``: on a pixel centre, the average of the forward and the backward
      cell, i.e. a central difference everywhere; elsewhere ordinary bilinear sampling.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["STENCILS", "affine_sample", "bilinear_sample", "normalized_grid", "paper_cells"]

STENCILS = ("paper", "central")

# Points closer than this (in pixels) to a pixel centre count as on it for "central".
_ON_CENTRE = 1e-4


_HALF = (torch.float16, torch.bfloat16)


def _work(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in _HALF else dtype


def _describe(t) -> str:
    if isinstance(t, torch.Tensor):
        return f"shape {tuple(t.shape)} and dtype {t.dtype}"
    return type(t).__name__


def normalized_grid(h: int, w: int, *, dtype: torch.dtype, device=None) -> torch.Tensor:
    """Homogeneous output coordinates ``(H, W, 3)`` = ``(u, v, 1)``, align_corners=True.

    A unit-size axis sits at coordinate 0, as in ``F.affine_grid``.

    >>> normalized_grid(2, 3, dtype=torch.float32)[..., :2].tolist()
    [[[-1.0, -1.0], [0.0, -1.0], [1.0, -1.0]], [[-1.0, 1.0], [0.0, 1.0], [1.0, 1.0]]]
    """
    for name, n in (("h", h), ("w", w)):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"normalized_grid: {name} must be a positive integer, got {n!r}")
    u = torch.linspace(-1.0, 1.0, w, dtype=dtype, device=device) if w > 1 else torch.zeros(
        1, dtype=dtype, device=device
    )
    v = torch.linspace(-1.0, 1.0, h, dtype=dtype, device=device) if h > 1 else torch.zeros(
        1, dtype=dtype, device=device
    )
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    return torch.stack([uu, vv, torch.ones_like(uu)], dim=-1)


def _reflect(i: torch.Tensor, n: int) -> torch.Tensor:
    """Reflect integer indices into ``[0, n - 1]`` about the border pixel centres."""
    if n == 1:
        return torch.zeros_like(i)
    period = 2 * (n - 1)
    i = torch.remainder(i, period)
    return torch.where(i > n - 1, period - i, i)


def bilinear_sample(
    img: torch.Tensor,
    ix: torch.Tensor,
    iy: torch.Tensor,
    cell_x: torch.Tensor | None = None,
    cell_y: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sample ``img`` at pixel coordinates with bilinear weights.

    Args:
        img: ``(B, C, H, W)``.
        ix, iy: ``(B, Ho, Wo)`` sampling positions in pixels (column, row).
        cell_x, cell_y: integer ``(B, Ho, Wo)`` lower corners of the interpolation cell;
            ``floor(ix)``, ``floor(iy)`` when omitted. The weights are linear in
            ``ix - cell_x``, so the cell fixes the one-sided derivative at a pixel centre.

    Returns:
        ``(B, C, Ho, Wo)``.
    """
    if not isinstance(img, torch.Tensor) or img.ndim != 4:
        raise ValueError("bilinear_sample: img must be a (B, C, H, W) tensor, got "
                         f"{tuple(img.shape) if isinstance(img, torch.Tensor) else type(img).__name__}")
    b, c, h, w = img.shape
    if ix.ndim != 3 or ix.shape != iy.shape or ix.shape[0] != b:
        raise ValueError(f"bilinear_sample: ix and iy must both be (B={b}, Ho, Wo), got "
                         f"{tuple(ix.shape)} and {tuple(iy.shape)}")
    if cell_x is None:
        cell_x = torch.floor(ix.detach())
    if cell_y is None:
        cell_y = torch.floor(iy.detach())
    cell_x = cell_x.to(torch.long)
    cell_y = cell_y.to(torch.long)
    fx = ix - cell_x.to(ix.dtype)
    fy = iy - cell_y.to(iy.dtype)
    flat = img.reshape(b, c, h * w)
    out_shape = (b, c) + tuple(ix.shape[1:])
    out = None
    for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):
        wx = fx if dx else 1 - fx
        wy = fy if dy else 1 - fy
        col = _reflect(cell_x + dx, w)
        row = _reflect(cell_y + dy, h)
        index = (row * w + col).reshape(b, 1, -1).expand(b, c, -1)
        vals = torch.gather(flat, 2, index).reshape(out_shape)
        term = vals * (wx * wy).unsqueeze(1)
        out = term if out is None else out + term
    return out


def paper_cells(theta: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's interpolation cells: ``floor`` of float32 ``F.affine_grid`` pixels."""
    b = theta.shape[0]
    if h == 1 or w == 1:  # affine_grid warns on unit sizes; compute its float32 grid directly
        base = normalized_grid(h, w, dtype=torch.float32, device=theta.device)
        grid = torch.einsum("hwk,bjk->bhwj", base, theta.detach().float())
    else:
        grid = F.affine_grid(theta.detach().float(), [b, 1, h, w], align_corners=True)
    ix = ((grid[..., 0] + 1) / 2) * (w - 1)
    iy = ((grid[..., 1] + 1) / 2) * (h - 1)
    return torch.floor(ix), torch.floor(iy)


def affine_sample(img: torch.Tensor, theta: torch.Tensor, *, stencil: str = "paper") -> torch.Tensor:
    """Resample ``img`` ``(B, C, H, W)`` on the grid ``theta`` ``(B, 2, 3)`` maps to.

    Differentiable in ``theta`` and ``img`` by forward mode and double backward.

    >>> img = torch.randn(1, 2, 5, 6, dtype=torch.float64)
    >>> theta = torch.tensor([[[0.9, 0.1, 0.05], [-0.2, 1.1, 0.0]]], dtype=torch.float64)
    >>> ref = F.grid_sample(img, F.affine_grid(theta, [1, 2, 5, 6], align_corners=True),
    ...                     padding_mode="reflection", align_corners=True)
    >>> torch.allclose(affine_sample(img, theta), ref)
    True
    """
    if stencil not in STENCILS:
        raise ValueError(f"unknown stencil {stencil!r}; use one of {STENCILS}")
    if not isinstance(img, torch.Tensor) or img.ndim != 4 or not img.is_floating_point():
        raise ValueError("affine_sample: img must be a floating-point (B, C, H, W) tensor, got "
                         f"{_describe(img)}")
    if (not isinstance(theta, torch.Tensor) or not theta.is_floating_point()
            or theta.shape != (img.shape[0], 2, 3)):
        raise ValueError(f"affine_sample: theta must be a floating-point ({img.shape[0]}, 2, 3) "
                         f"tensor, one matrix per image, got {_describe(theta)}")
    if min(img.shape[1:]) == 0:
        raise ValueError(f"affine_sample: img has no pixels, shape {tuple(img.shape)}")
    if img.shape[0] == 0:
        return img.clone()
    if img.dtype in _HALF or theta.dtype in _HALF:
        out = affine_sample(img.to(_work(img.dtype)), theta.to(_work(theta.dtype)),
                            stencil=stencil)
        return out.to(img.dtype)
    h, w = img.shape[-2:]
    base = normalized_grid(h, w, dtype=theta.dtype, device=theta.device)
    coords = torch.einsum("hwk,bjk->bhwj", base, theta)
    ix = (coords[..., 0] + 1) / 2 * (w - 1)
    iy = (coords[..., 1] + 1) / 2 * (h - 1)
    if stencil == "paper":
        cx, cy = paper_cells(theta, h, w)
        return bilinear_sample(img, ix, iy, cx, cy)
    jx, jy = ix.detach(), iy.detach()
    forward = bilinear_sample(img, ix, iy, torch.floor(jx + _ON_CENTRE), torch.floor(jy + _ON_CENTRE))
    # Off a pixel centre both cells are floor(ix), and the average is plain bilinear.
    backward = bilinear_sample(
        img, ix, iy, torch.ceil(jx - _ON_CENTRE) - 1, torch.ceil(jy - _ON_CENTRE) - 1
    )
    return 0.5 * (forward + backward)
