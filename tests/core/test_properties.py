"""Properties every measuring function keeps on square and non-square images.

A model that only sees rings around the image centre is rotation invariant: ``lee``,
``sensitivity_ratio`` and ``layerwise_lee`` must all find its rotation derivative near
zero, on any ``H x W`` grid (rotations act in isotropic pixel coordinates), while the same
model with its rings moved off the centre, and translations of either, are not.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lielib import layerwise_contributions, layerwise_lee, lee, sensitivity_ratio

F64 = torch.float64
SHAPES = [(40, 40), (48, 64), (56, 40)]


class Rings(nn.Module):
    """Per channel, the image weighted by Gaussian rings about ``centre`` (pixels from the middle)."""

    def __init__(self, h: int, w: int, centre=(0.0, 0.0), sigmas=(2.0, 3.0, 4.5)):
        super().__init__()
        v = torch.arange(h, dtype=F64) - (h - 1) / 2 - centre[0]
        u = torch.arange(w, dtype=F64) - (w - 1) / 2 - centre[1]
        yy, xx = torch.meshgrid(v, u, indexing="ij")
        r2 = xx**2 + yy**2
        self.register_buffer("rings", torch.stack([torch.exp(-r2 / (2 * s**2)) for s in sigmas]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bchw,khw->bck", x, self.rings).flatten(1)


def disc_model(h: int, w: int, centre=(0.0, 0.0)) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(Rings(h, w, centre), nn.Tanh(), nn.Linear(9, 4)).to(F64)


def images(h: int, w: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(3, 3, h, w, dtype=F64, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_a_disc_model_is_rotation_invariant_for_every_measure(shape):
    """Means over images of logit derivatives (softmax saturation varies from image to image)."""
    h, w = shape
    x = images(h, w)
    disc, off = disc_model(h, w), disc_model(h, w, centre=(6.0, -8.0))
    actions = ["rotate", "translate_x"]
    d = lee(disc, x, actions, output="logits").mean()
    o = lee(off, x, actions, output="logits").mean()
    assert d.rotate < 0.1 * o.rotate and d.rotate < 0.02 * d.translate_x
    rho = sensitivity_ratio(disc, x, actions, output="logits").groupby("action").rho.mean()
    assert rho["rotate"] < 0.05 and rho["translate_x"] > 0.2
    assert sensitivity_ratio(off, x, "rotate", output="logits").rho.mean() > 0.2
    parts = layerwise_lee(disc, x, actions, output="logits").groupby(["action", "module"]).value
    off_parts = layerwise_lee(off, x, "rotate", output="logits").groupby("module").value
    assert parts.mean()["rotate", "0"] < 0.01 * off_parts.mean()["0"]
    assert parts.mean()["rotate", "0"] < 0.01 * parts.mean()["translate_x", "0"]


def test_a_disc_is_as_invariant_on_a_non_square_grid_as_on_a_square_one():
    """The same rings see the same pixels in a 48 x 64 image and in its central 48 x 48 crop:
    the same rotation derivative (in normalised coordinates the disc was an ellipse)."""
    x = images(48, 64)
    wide = lee(disc_model(48, 64), x, "rotate", output="logits").rotate
    square = lee(disc_model(48, 48), x[..., 8:56], "rotate", output="logits").rotate
    torch.testing.assert_close(torch.tensor(wide.to_numpy()), torch.tensor(square.to_numpy()),
                               rtol=1e-2, atol=0)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_measures_agree_with_each_other_on_any_grid(shape):
    """lee is sensitivity_ratio's lee column, and the layer-wise terms add up to the total."""
    h, w = shape
    model, x = disc_model(h, w, centre=(2.0, 1.0)), images(h, w, seed=2)
    actions = ["rotate", "shear_x", "translate_y", "saturate"]
    wide = lee(model, x, actions)
    tidy = sensitivity_ratio(model, x, actions)
    torch.testing.assert_close(
        torch.tensor(tidy.pivot(index="image", columns="action", values="lee")[actions].to_numpy()),
        torch.tensor(wide.to_numpy()), rtol=1e-10, atol=1e-14)
    for action in actions:
        dec = layerwise_contributions(model, x, action)
        assert dec.residual.abs().max() <= 1e-9 * dec.total.abs().max() + 1e-15
        torch.testing.assert_close(dec.total.abs().mean(-1),
                                   torch.tensor(wide[action].to_numpy()), rtol=1e-10, atol=1e-14)
