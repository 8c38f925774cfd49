"""Tangent images: ``tau_G x = d/dt T_t x`` at ``t = 0``, batched over actions and layouts.

With the interpolation cell fixed at ``t = 0`` an affine tangent is linear in its
generator, ``tau_G x = (G p)_u tau_u x + (G p)_v tau_v x``, so two resampling derivatives
(``translate_x`` and ``translate_y``) serve every affine action; the Lie derivative is
linear in the generator too, so only a basis of the generators' span needs one.

Tensors of any :class:`~lielib.layout.Layout` are viewed as ``(B, C, H, W)`` images; the
prefix tokens of a token layout carry no position and get a zero tangent.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .actions import Action, AffineAction, IntensityScaling, check_image, compute_dtype, get_action
from .layout import Layout, from_nchw, to_nchw
from .sampling import STENCILS, normalized_grid

__all__ = [
    "TangentOperator",
    "generator_coordinates",
    "layout_tangent",
    "layout_tangents",
    "span_basis",
    "tangents",
]


def tangents(
    x: torch.Tensor, actions: Sequence[str | Action], *, stencil: str = "central"
) -> torch.Tensor:
    """The tangent images of several actions, ``(K, B, C, H, W)``.

    With the interpolation cell fixed at ``t = 0``, an affine tangent is linear in its
    generator: ``tau_G x = (G p)_u * tau_u x + (G p)_v * tau_v x``, where ``tau_u`` and
    ``tau_v`` are the tangents of ``translate_x`` and ``translate_y`` and ``p = (u, v, 1)``
    is each pixel's normalised position. Two resampling derivatives therefore serve every
    affine action, whichever the stencil; other actions use their own ``tangent``. ``G``
    is the generator of the image's grid (:func:`lielib.actions.generator_on`).
    Half-precision images are differentiated in float32 and rounded back.

    >>> x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    >>> tau = tangents(x, ["rotate", "shear_x", "shear_y"])
    >>> tau.shape, torch.allclose(tau[0], tau[1] - tau[2])  # rotate = shear_x - shear_y
    (torch.Size([3, 2, 3, 8, 8]), True)
    """
    check_image(x, "tangents")
    acts = _actions(actions, "tangents")
    if stencil not in STENCILS:
        raise ValueError(f"unknown stencil {stencil!r}; use one of {STENCILS}")
    dtype = x.dtype
    x = x.to(compute_dtype(dtype))
    out = []
    fields = None
    for a in acts:
        if type(a) is not AffineAction:  # subclasses may define their own tangent
            out.append(a.tangent(x, stencil=stencil))
            continue
        if fields is None:
            tau_u = get_action("translate_x").tangent(x, stencil=stencil)
            tau_v = get_action("translate_y").tangent(x, stencil=stencil)
            p = normalized_grid(*x.shape[-2:], dtype=x.dtype, device=x.device)
            fields = tau_u, tau_v, p
        tau_u, tau_v, p = fields
        g = a.generator_matrix(dtype=x.dtype, device=x.device, size=tuple(x.shape[-2:]))[:2]
        velocity = p @ g.T  # (H, W, 2): (G p)_u, (G p)_v
        out.append(velocity[..., 0] * tau_u + velocity[..., 1] * tau_v)
    return torch.stack(out).to(dtype)


def _actions(actions: Sequence[str | Action], who: str) -> list[Action]:
    if isinstance(actions, (str, Action)):
        raise TypeError(f"{who}: actions must be a list of names or Actions, got {actions!r}; "
                        f"write [{actions!r}]")
    acts = [get_action(a) for a in actions]
    if not acts:
        raise ValueError(f"{who}: no actions given; pass at least one name from list_actions()")
    return acts


def generator_coordinates(actions: Sequence[str | Action]) -> torch.Tensor:
    """The actions' generators as rows of one coordinate matrix, ``(K, D)`` float64.

    An affine generator has the six entries of ``G``, intensity scaling one more axis,
    and any other action an axis of its own. The Lie derivative is linear in the
    generator, ``L_{aG + bH} f = a L_G f + b L_H f``, so rows that depend linearly on
    others need no derivative of their own (``rotate = shear_x - shear_y``).

    >>> generator_coordinates(["rotate", "saturate"])
    tensor([[ 0.,  1.,  0., -1.,  0.,  0.,  0.],
            [ 0.,  0.,  0.,  0.,  0.,  0.,  1.]], dtype=torch.float64)
    """
    acts = _actions(actions, "generator_coordinates")
    others = [a for a in acts if not isinstance(a, (AffineAction, IntensityScaling))]
    coords = torch.zeros(len(acts), 7 + len(others), dtype=torch.float64)
    for k, a in enumerate(acts):
        if isinstance(a, AffineAction):
            coords[k, :6] = torch.tensor(a.generator, dtype=torch.float64).flatten()
        elif isinstance(a, IntensityScaling):
            coords[k, 6] = 1.0
        else:
            coords[k, 7 + next(i for i, o in enumerate(others) if o is a)] = 1.0
    return coords


def span_basis(coords: torch.Tensor, *, tol: float = 1e-9) -> tuple[list[int], torch.Tensor]:
    """A basis of the rows' span, chosen greedily among the rows, and every row in it.

    Returns:
        ``basis``: indices of linearly independent rows, in order; ``coefficients``:
        ``(K, len(basis))`` with ``coords[k] = coefficients[k] @ coords[basis]``.

    >>> basis, coef = span_basis(generator_coordinates(["shear_x", "shear_y", "rotate"]))
    >>> basis, coef[2].tolist()
    ([0, 1], [1.0, -1.0])
    """
    basis: list[int] = []
    for k in range(coords.shape[0]):
        candidate = coords[basis + [k]]
        if int(torch.linalg.matrix_rank(candidate, tol=tol)) == len(basis) + 1:
            basis.append(k)
    if not basis:
        return [], torch.zeros(coords.shape[0], 0, dtype=coords.dtype)
    b = coords[basis]  # (R, D)
    coefficients = torch.linalg.lstsq(b.T, coords.T).solution.T  # (K, R)
    if not torch.allclose(coefficients @ b, coords, atol=tol * 10, rtol=0):
        raise RuntimeError("span_basis: rows are not in the span of the basis")
    return basis, coefficients


def layout_tangent(action: Action, x: torch.Tensor, layout: Layout, stencil: str) -> torch.Tensor:
    """``tau x`` for ``x`` laid out as ``layout``, same shape as ``x``; prefix tokens get 0."""
    img, prefix = to_nchw(x, layout)
    v = action.tangent(img, stencil=stencil)
    return from_nchw(v, None if prefix is None else torch.zeros_like(prefix), layout)


def layout_tangents(
    actions: Sequence[Action], x: torch.Tensor, layout: Layout, stencil: str
) -> torch.Tensor:
    """``(K, *x.shape)``: each action's tangent of ``x`` (prefix tokens get zero)."""
    img, prefix = to_nchw(x, layout)
    tau = tangents(img, actions, stencil=stencil)
    zero = None if prefix is None else torch.zeros_like(prefix)
    return torch.stack([from_nchw(v, zero, layout) for v in tau])


_OFFSETS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]


def _stencil_weights(action: Action, h: int, w: int, stencil: str, dtype, device):
    """The tangent of an affine action at ``t = 0`` as a 3x3 stencil with per-pixel weights.

    ``tau(x)[p] = sum_o B_o(p) x[p + o]`` over offsets ``o`` in ``{-1, 0, 1}^2`` (zero
    outside the image; reflection is folded into the weights). The weights are read off
    ``action.tangent`` applied to nine images that colour pixels by ``(row % 3, col % 3)``:
    inside any 3x3 window each colour occurs once. The operator is checked against
    ``action.tangent`` on a random image; ``None`` when they disagree (a wider stencil).
    """
    rows = torch.arange(h, device=device)[:, None] % 3
    cols = torch.arange(w, device=device)[None, :] % 3
    probes = torch.stack([((rows == a) & (cols == b)).double() for a in range(3) for b in range(3)])
    resp = action.tangent(probes[None], stencil=stencil)[0]  # (9, H, W), one image of 9 channels
    ops = []
    for dy, dx in _OFFSETS:
        r = torch.arange(h, device=device)[:, None] + dy
        c = torch.arange(w, device=device)[None, :] + dx
        valid = (r >= 0) & (r < h) & (c >= 0) & (c < w)
        colour = ((r % 3) * 3 + (c % 3)).expand(h, w)
        weight = torch.gather(resp, 0, colour[None]).squeeze(0) * valid
        if weight.abs().max() > 0:
            ops.append((dy, dx, weight))
    test = torch.randn(1, 1, h, w, dtype=torch.float64, device=device,
                       generator=torch.Generator(device=device).manual_seed(0))
    ref = action.tangent(test, stencil=stencil)
    got = _apply_stencil(ops, test)
    if not torch.allclose(got, ref, rtol=1e-9, atol=1e-9 * float(ref.abs().max()) + 1e-12):
        return None
    return [(dy, dx, wt.to(dtype)) for dy, dx, wt in ops]


def _apply_stencil(ops, img: torch.Tensor) -> torch.Tensor:
    h, w = img.shape[-2:]
    pad = F.pad(img, (1, 1, 1, 1))
    out = None
    for dy, dx, wt in ops:
        shifted = pad[..., 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
        out = shifted * wt if out is None else out.addcmul_(shifted, wt)
    return torch.zeros_like(img) if out is None else out


class TangentOperator:
    """``x -> tau x`` for one action on tensors of any layout, as a linear operator.

    Affine tangents are applied as 3x3 stencils with per-pixel weights, computed once per
    grid size, dtype and device (:func:`layout_tangent` where no 3x3 stencil reproduces
    the action's tangent); other actions use their own ``tangent``.
    """

    def __init__(self, action: Action, stencil: str):
        self.action, self.stencil = action, stencil
        self.cache: dict = {}

    def __call__(self, t: torch.Tensor, layout: Layout) -> torch.Tensor:
        if not isinstance(self.action, AffineAction):
            return layout_tangent(self.action, t, layout, self.stencil)
        img, prefix = to_nchw(t, layout)
        work = compute_dtype(img.dtype)
        key = (tuple(img.shape[-2:]), work, img.device)
        if key not in self.cache:
            self.cache[key] = _stencil_weights(self.action, *key[0], self.stencil, work,
                                               img.device)
        ops = self.cache[key]
        if ops is None:
            return layout_tangent(self.action, t, layout, self.stencil)
        v = _apply_stencil(ops, img.to(work)).to(img.dtype)
        return from_nchw(v, None if prefix is None else torch.zeros_like(prefix), layout)
