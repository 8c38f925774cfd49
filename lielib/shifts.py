"""Each module's error under integer circular shifts: an alias-blind layer-wise baseline.

Shifts by whole multiples of a module's stride never see aliasing, which is why this
metric misses what the Lie derivative measures (:mod:`lielib.decompose`). Same module
selection, layouts and columns as :func:`lielib.layerwise_lee`.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch
from torch import nn

from .decompose import checked_input, contributions_frame
from .layout import Layout, from_nchw, to_nchw
from .lie import measuring
from .selection import select_modules
from .sites import Site, module_hooks, no_inplace, record_sites

__all__ = ["layerwise_shift_error"]


def _roll(t: torch.Tensor, layout: Layout, s: int, dim: int) -> torch.Tensor:
    img, prefix = to_nchw(t, layout)
    return from_nchw(torch.roll(img, s, dims=dim), prefix, layout)


def layerwise_shift_error(
    model: nn.Module, x: torch.Tensor, *, modules: Sequence[str] | None = None
) -> pd.DataFrame:
    """Each module's error under integer circular shifts, an alias-blind baseline.

    ``err_m = mean_d ||m(S_d^s x_m) - S_d^1 m(x_m)||^2 / ||m(x_m)||^2`` over the two axes
    ``d``, where ``S_d^k`` rolls the grid by ``k`` pixels and ``s = H_in / H_out`` is the
    module's stride, so the output moves by exactly one pixel (an invariant output is
    compared unshifted, with ``s = 1``). Modules without a spatial input get ``NaN``.

    Args:
        model: a classifier ``(B, C, H, W) -> (B, num_classes)``; unchanged afterwards.
        x: input images ``(B, C, H, W)``.
        modules: qualified module names instead of the paper's selection.

    Returns:
        The columns of :func:`lielib.layerwise_lee` without ``action`` and without a
        residual row: ``image``, ``module``, ..., ``value``.

    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, padding_mode="circular"),
    ...                     nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3))
    >>> err = layerwise_shift_error(net, torch.randn(1, 1, 8, 8)).set_index("module").value
    >>> bool(err["0"] < 1e-10), bool(err["3"] != err["3"])  # circular conv; Linear: NaN
    (True, True)
    """
    x = checked_input(model, x, "layerwise_shift_error")
    units = select_modules(model, modules)
    named = dict(model.named_modules())
    with measuring(model), no_inplace(model), torch.no_grad():
        sites = record_sites(model, x, units)
        vals = torch.full((len(sites) + 1, x.shape[0]), float("nan"), dtype=torch.float64)
        for j, s in enumerate(sites):
            if s.in_layout is None:
                continue
            bypass = []
            if s.split_child is not None:
                child = named[f"{s.name}.{s.split_child}" if s.name else s.split_child]
                bypass = [(child, "forward", lambda m, a, o: a[0])]
            with module_hooks(bypass):
                vals[j] = _shift_error(s, s.module, s.x)
    for s in sites:
        s.x = None
    return contributions_frame(sites, vals, residual_row=False)


def _shift_error(s: Site, m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    y = m(x)
    hin = to_nchw(x, s.in_layout)[0].shape[-2:]
    hout = None if s.out_layout is None else to_nchw(y, s.out_layout)[0].shape[-2:]
    errs = []
    for axis, dim in ((0, -2), (1, -1)):
        if hout is None:
            step, out_step = 1, 0
        elif hin[axis] % hout[axis] == 0:
            step, out_step = hin[axis] // hout[axis], 1
        else:
            return torch.full((x.shape[0],), float("nan"), dtype=torch.float64)
        ys = m(_roll(x, s.in_layout, step, dim))
        target = y if hout is None else _roll(y, s.out_layout, out_step, dim)
        num = (ys - target).flatten(1).square().sum(1)
        den = y.flatten(1).square().sum(1).clamp_min(torch.finfo(y.dtype).tiny)
        errs.append((num / den).double())
    return torch.stack(errs).mean(0).cpu()
