"""The signed budget of the layer-wise decomposition, beside the paper's squared norms.

The exact decomposition's terms add up, ``L f = sum_m c_m + r`` with ``c_m = J_{>m} L m``
(:func:`lielib.decompose.layerwise_contributions`), but their squared norms do not: when
terms cancel, ``sum_m ||c_m||^2`` is many times ``||L f||^2`` and a "share" read from the
squared norms is a share of a sum dominated by cancellation. Projecting every term on the
end-to-end derivative gives a budget that adds up:

``s_m = <c_m, L f> / ||L f||^2``,  ``s_r = <r, L f> / ||L f||^2``,  ``sum_m s_m + s_r = 1``.

A signed share can be negative (the module undoes error made upstream) or above 1.
"""

from __future__ import annotations

import pandas as pd
import torch

from .decompose import Decomposition, contributions_frame

__all__ = ["budget_frame", "signed_shares", "squared_ratio"]


def _exact(dec: Decomposition) -> tuple[torch.Tensor, torch.Tensor]:
    if dec.contributions is None or dec.residual is None:
        raise ValueError("the signed budget needs the signed contributions of the exact method "
                         f"(method='exact'); this decomposition is {dec.mode!r}")
    norm2 = dec.total.square().sum(-1)
    return torch.cat([dec.contributions, dec.residual[None]]), norm2


def signed_shares(dec: Decomposition) -> torch.Tensor:
    """``(M + 1, B)``: ``s_m = <J_{>m} L m, L f> / ||L f||^2`` per site and image, residual last.

    Every column sums to 1 (up to rounding). An image whose ``L f`` is exactly zero has no
    budget: its column is NaN.

    Raises:
        ValueError: ``dec`` came from the probe estimator, which has no signed terms.

    >>> from torch import nn
    >>> from lielib import layerwise_contributions
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), nn.AdaptiveAvgPool2d(1),
    ...                     nn.Flatten(), nn.Linear(2, 3)).double()
    >>> dec = layerwise_contributions(net, torch.randn(2, 1, 8, 8, dtype=torch.float64), "rotate")
    >>> torch.allclose(signed_shares(dec).sum(0), torch.ones(2, dtype=torch.float64))
    True
    """
    terms, norm2 = _exact(dec)
    dots = (terms * dec.total).sum(-1)
    return torch.where(norm2 > 0, dots / norm2.clamp_min(torch.finfo(norm2.dtype).tiny),
                       torch.full_like(dots, float("nan")))


def squared_ratio(dec: Decomposition) -> torch.Tensor:
    """``(B,)``: ``sum_m ||J_{>m} L m||^2 / ||L f||^2`` over the measured modules (no residual).

    1 when one module carries all of ``L f``; far above 1 when the modules' terms cancel.
    Works for probe estimates too (then the numerator is estimated); NaN where ``L f = 0``.

    >>> from torch import nn
    >>> from lielib import layerwise_contributions
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(72, 3)).double()
    >>> dec = layerwise_contributions(net, torch.randn(1, 1, 8, 8, dtype=torch.float64), "rotate")
    >>> squared_ratio(dec).shape  # one value per image
    torch.Size([1])
    """
    norm2 = dec.total.square().sum(-1)
    num = dec.values[:-1].sum(0)
    return torch.where(norm2 > 0, num / norm2.clamp_min(torch.finfo(norm2.dtype).tiny),
                       torch.full_like(num, float("nan")))


def budget_frame(dec: Decomposition) -> pd.DataFrame:
    """The tidy frame of :func:`lielib.decompose.contributions_frame` with the budget beside it.

    Adds the columns ``signed`` (``s_m``; the residual row holds ``s_r``), ``total``
    (``||L f||^2`` of the row's image) and ``squared_ratio`` (of the row's image).

    >>> from torch import nn
    >>> from lielib import layerwise_contributions
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(72, 3)).double()
    >>> dec = layerwise_contributions(net, torch.randn(1, 1, 8, 8, dtype=torch.float64), "rotate")
    >>> list(budget_frame(dec).columns[-3:])
    ['signed', 'total', 'squared_ratio']
    """
    frame = contributions_frame(dec.sites, dec.values)
    img = frame.image.to_numpy()
    frame["signed"] = signed_shares(dec).detach().double().cpu().numpy().T.ravel()
    frame["total"] = dec.total.square().sum(-1).detach().double().cpu().numpy()[img]
    frame["squared_ratio"] = squared_ratio(dec).detach().double().cpu().numpy()[img]
    return frame
