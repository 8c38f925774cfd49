"""sensitivity_ratio: its defining properties, its uncertainty, its cost path, bad input."""

import copy
import math

import numpy as np
import pytest
import timm
import torch
from conftest import reinit_
from torch import nn

from lielib import lee, sensitivity_ratio
from lielib.actions import AffineAction, get_action
from lielib.layout import Layout
from lielib.sensitivity import phase_randomize, random_phases, reference_generator

SPECTRA = ["gradient", "tangent"]


def image(b=2, c=3, h=12, w=12, seed=0, dtype=torch.float64):
    return torch.randn(b, c, h, w, dtype=dtype, generator=torch.Generator().manual_seed(seed))


def smooth_image(b=4, c=3, h=16, w=16, seed=0):
    """Photo-like: smooth noise (a blurred random field), so tangents are not white noise."""
    raw = image(b, c, h + 4, w + 4, seed)
    kernel = torch.ones(c, 1, 5, 5, dtype=torch.float64) / 25
    return nn.functional.conv2d(raw, kernel, groups=c)


def smooth_net(classes=5, seed=0):
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Flatten(),
                        nn.Linear(4 * 16 * 16, classes)).double()
    return reinit_(net, seed=seed + 1000, scale=0.1)


def dense_linear(d, classes=10, seed=123):
    """A random dense linear classifier, its weights from a generator of its own.

    Weights of variance 1 / d keep the logits of order one (an unsaturated softmax).
    """
    net = nn.Sequential(nn.Flatten(), nn.Linear(d, classes)).double()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        net[1].weight.copy_(torch.randn(classes, d, generator=gen, dtype=torch.float64) / d**0.5)
        net[1].bias.zero_()
    return net


class Scaled(nn.Module):
    def __init__(self, net, factor):
        super().__init__()
        self.net, self.factor = net, factor

    def forward(self, x):
        return self.factor * self.net(x)


class ScaleNormalised(nn.Module):
    """Divides its input by its norm first: exactly invariant to intensity scaling."""

    def __init__(self, d):
        super().__init__()
        self.fc = nn.Linear(d, 4).double()

    def forward(self, x):
        return self.fc((x / x.flatten(1).norm(dim=1)[:, None, None, None]).flatten(1))


class CentrePixelNet(nn.Module):
    """Reads only the centre pixel, which every linear action fixes."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 4).double()

    def forward(self, x):
        return self.fc(x[:, :, x.shape[2] // 2, x.shape[3] // 2])


def test_phase_randomisation_keeps_norm_and_spectrum_and_is_real():
    v = smooth_image(b=3)
    phases = random_phases(3, 16, 16, torch.Generator().manual_seed(0), dtype=torch.float64)
    out = phase_randomize(v, phases)
    assert out.dtype == v.dtype and out.shape == v.shape
    torch.testing.assert_close(out.flatten(1).norm(dim=1), v.flatten(1).norm(dim=1))
    spec = torch.fft.rfft2
    torch.testing.assert_close(spec(out).abs(), spec(v).abs())
    cross = lambda z: spec(z)[:, 0] * spec(z)[:, 1].conj()  # channel cross-spectrum
    torch.testing.assert_close(cross(out), cross(v))
    assert (out - v).abs().max() > 0.1 * v.abs().max()  # the phases did change


@pytest.mark.parametrize("spectrum", SPECTRA)
def test_zero_for_a_model_invariant_to_saturate(spectrum):
    x = smooth_image(b=3)
    frame = sensitivity_ratio(ScaleNormalised(3 * 16 * 16), x, ["saturate", "rotate"],
                              output="logits", spectrum=spectrum)
    rho = frame.set_index(["action", "image"])["rho"]
    assert rho["saturate"].abs().max() < 1e-12
    assert (rho["rotate"] > 0.01).all()


@pytest.mark.parametrize("name", ["rotate", "scale", "shear_x"])
def test_exactly_zero_for_an_exactly_invariant_model(name):
    frame = sensitivity_ratio(CentrePixelNet(), image(h=9, w=9), name, output="logits")
    assert (frame["rho"] == 0).all() and (frame["lee"] == 0).all()
    assert (frame["reference_gain"] > 0).all()


@pytest.mark.parametrize("spectrum", SPECTRA)
def test_unchanged_when_the_tangent_is_rescaled(spectrum):
    net, x = smooth_net(), smooth_image()
    rotate = get_action("rotate")
    fast = AffineAction("rotate_3x", tuple(tuple(3 * g for g in row) for row in rotate.generator))
    frame = sensitivity_ratio(net, x, ["rotate", fast], spectrum=spectrum, share=False)
    by = frame.set_index(["action", "image"])
    torch.testing.assert_close(torch.tensor(by.loc["rotate_3x", "rho"].to_numpy()),
                               torch.tensor(by.loc["rotate", "rho"].to_numpy()), rtol=1e-6, atol=0)
    lee_ratio = by.loc["rotate_3x", "lee"].to_numpy() / by.loc["rotate", "lee"].to_numpy()
    assert abs(lee_ratio - 3).max() < 1e-6  # raw LEE is not scale-free


@pytest.mark.parametrize("spectrum", SPECTRA)
def test_exactly_unchanged_when_logits_are_multiplied(spectrum):
    net, x = smooth_net(), smooth_image()
    actions = ["translate_x", "rotate", "saturate"]
    base = sensitivity_ratio(net, x, actions, output="logits", spectrum=spectrum)
    hot = sensitivity_ratio(Scaled(net, 7.0), x, actions, output="logits", spectrum=spectrum)
    torch.testing.assert_close(torch.tensor(hot["rho"].to_numpy()),
                               torch.tensor(base["rho"].to_numpy()), rtol=1e-12, atol=0)
    torch.testing.assert_close(torch.tensor(hot["gain"].to_numpy()),
                               7 * torch.tensor(base["gain"].to_numpy()), rtol=1e-12, atol=0)
    soft = sensitivity_ratio(Scaled(net, 7.0), x, actions, spectrum=spectrum)
    assert not torch.allclose(torch.tensor(soft["rho"].to_numpy()),
                              torch.tensor(base["rho"].to_numpy()), rtol=1e-3)


@pytest.mark.parametrize("output", ["logits", "softmax"])
@pytest.mark.parametrize("spectrum", SPECTRA)
def test_about_one_for_a_random_dense_linear_classifier(spectrum, output):
    """No direction is special: E rho^2 = 1 within three standard errors over images."""
    x = smooth_image(b=48, seed=1)
    frame = sensitivity_ratio(dense_linear(3 * 16 * 16), x, ["translate_x", "rotate", "scale"],
                              spectrum=spectrum, output=output, seed=5)
    sq = torch.tensor(frame["rho"].to_numpy()) ** 2
    se = sq.std() / math.sqrt(len(sq))
    assert abs(sq.mean() - 1) < 3 * se, (float(sq.mean()), float(se))
    assert float(se) < 0.06  # so the tolerance (3 se) is tight: under 0.2


def test_reported_uncertainty_matches_the_spread_over_seeds():
    net, x = smooth_net(), smooth_image(b=2)
    runs = [sensitivity_ratio(net, x, ["rotate"], seed=s) for s in range(24)]
    rho = torch.tensor(np.stack([r["rho"].to_numpy() for r in runs]))  # (seeds, images)
    reported = torch.tensor(np.stack([r["rho_se"].to_numpy() for r in runs])).mean(0)
    ratio = rho.std(0) / reported
    assert ((ratio > 0.6) & (ratio < 1.6)).all(), ratio


def test_more_references_shrink_the_uncertainty():
    net, x = smooth_net(), smooth_image(b=2)
    few = sensitivity_ratio(net, x, ["rotate"], num_references=4)["rho_se"].mean()
    many = sensitivity_ratio(net, x, ["rotate"], num_references=32)["rho_se"].mean()
    assert many < 0.7 * few


def test_deterministic_for_a_seed_and_seeded_by_its_own_generator():
    net, x = smooth_net(), smooth_image(b=2)
    state = torch.random.get_rng_state()
    a = sensitivity_ratio(net, x, ["rotate", "saturate"], seed=3)
    b = sensitivity_ratio(net, x, ["rotate", "saturate"], seed=3)
    assert a.equals(b)
    assert not a["rho"].equals(sensitivity_ratio(net, x, ["rotate", "saturate"], seed=4)["rho"])
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    assert sensitivity_ratio(net, x, "rotate", seed=g1).equals(sensitivity_ratio(net, x, "rotate", seed=g2))
    assert torch.equal(torch.random.get_rng_state(), state), "drew from the global RNG"
    # an integer seed is salted: it never replays the stream a model initialised from seed s
    plain = torch.randn(8, generator=torch.Generator().manual_seed(3))
    assert not torch.equal(torch.randn(8, generator=reference_generator(3, 0)), plain)


@pytest.mark.parametrize("spectrum", ["gradient", "tangent"])
def test_an_images_row_does_not_depend_on_the_other_images(spectrum):
    """References come from (seed, image index): a row is the same alone or in any batch."""
    net = smooth_net()
    x = torch.cat([smooth_image(b=1, seed=s) for s in range(4)])
    actions = ["rotate", "translate_x", "saturate"]
    full = sensitivity_ratio(net, x, actions, spectrum=spectrum, seed=5)
    alone = sensitivity_ratio(net, x[:1], actions, spectrum=spectrum, seed=5)
    torch.testing.assert_close(alone.to_numpy()[:, 2:].astype(float),
                               full[full.image == 0].to_numpy()[:, 2:].astype(float),
                               rtol=1e-9, atol=0)
    # another image in the others' places, and another order: image 0's row stays
    other = torch.cat([x[:1], x[3:], x[1:2]])
    moved = sensitivity_ratio(net, other, actions, spectrum=spectrum, seed=5)
    torch.testing.assert_close(moved[moved.image == 0].to_numpy()[:, 2:].astype(float),
                               alone.to_numpy()[:, 2:].astype(float), rtol=1e-9, atol=0)
    passes = sensitivity_ratio(net, x, actions, spectrum=spectrum, seed=5, images_per_pass=1)
    torch.testing.assert_close(passes.to_numpy()[:, 2:].astype(float),
                               full.to_numpy()[:, 2:].astype(float), rtol=1e-9, atol=0)
    # each image has references of its own: the same image twice gets two values
    twice = sensitivity_ratio(net, torch.cat([x[:1], x[:1]]), ["rotate"], spectrum=spectrum)
    assert twice.rho[0] != twice.rho[1]


def test_lee_column_equals_lee_and_shares_derivatives():
    model = reinit_(timm.create_model("test_resnet", num_classes=5), seed=0, scale=0.1).eval()
    x = image(b=2, h=32, w=32, dtype=torch.float32, seed=3)
    actions = ["translate_x", "translate_y", "rotate", "shear_x", "shear_y", "saturate"]
    frame = sensitivity_ratio(model, x, actions)
    raw = lee(model, x, actions)
    wide = frame.pivot(index="image", columns="action", values="lee")[actions]
    torch.testing.assert_close(wide.to_numpy(), raw.to_numpy(), rtol=1e-5, atol=1e-10)
    own = sensitivity_ratio(model, x, actions, share=False)
    torch.testing.assert_close(own["rho"].to_numpy(), frame["rho"].to_numpy(), rtol=1e-3, atol=0)
    assert list(frame.columns) == ["image", "action", "lee", "rho", "rho_se", "gain",
                                   "reference_gain"]
    assert frame["rho"].between(0.01, 100).all()


def test_tangent_spectrum_combines_references_linearly():
    """rotate = shear_x - shear_y: its references are Phi_r of its own tangent, so sharing
    derivatives across the span changes nothing."""
    net, x = smooth_net(), smooth_image(b=2)
    actions = ["shear_x", "shear_y", "rotate"]
    shared = sensitivity_ratio(net, x, actions, spectrum="tangent")
    own = sensitivity_ratio(net, x, actions, spectrum="tangent", share=False)
    torch.testing.assert_close(shared["rho"].to_numpy(), own["rho"].to_numpy(), rtol=1e-8, atol=0)


def test_token_layout():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 6), nn.Tanh(), nn.Flatten(), nn.Linear(17 * 6, 4)).double()
    x = torch.randn(3, 17, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    frame = sensitivity_ratio(net, x, ["translate_x", "rotate"], in_layout=Layout.tokens(1, (4, 4)),
                              spectrum="tangent")
    assert frame["rho"].notna().all() and (frame["rho"] > 0).all()


@pytest.mark.parametrize(("dtype", "rtol"), [(torch.float16, 0.1), (torch.bfloat16, 0.25)])
def test_half_precision_model_matches_float32(dtype, rtol):
    """Half-precision models are measured in their dtype (8 and 11 mantissa bits)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = timm.create_model("test_resnet", num_classes=5).eval()
    x = image(b=2, h=32, w=32, dtype=torch.float32, seed=3)
    actions = ["translate_x", "rotate", "saturate"]
    ref = sensitivity_ratio(model, x, actions)
    half = sensitivity_ratio(copy.deepcopy(model).to(dtype), x.to(dtype), actions)
    for column in ("rho", "lee"):
        torch.testing.assert_close(half[column].to_numpy(), ref[column].to_numpy(), rtol=rtol, atol=0)


def test_bad_inputs():
    net, x = smooth_net(), smooth_image(b=2)
    with pytest.raises(ValueError, match="unknown action 'spin'"):
        sensitivity_ratio(net, x, "spin")
    with pytest.raises(ValueError, match="num_references must be >= 2"):
        sensitivity_ratio(net, x, "rotate", num_references=1)
    with pytest.raises(TypeError, match="num_references must be an int"):
        sensitivity_ratio(net, x, "rotate", num_references=4.0)
    with pytest.raises(ValueError, match="unknown spectrum"):
        sensitivity_ratio(net, x, "rotate", spectrum="white")
    with pytest.raises(TypeError, match="seed must be"):
        sensitivity_ratio(net, x, "rotate", seed=1.5)
    with pytest.raises(ValueError, match="empty batch"):
        sensitivity_ratio(net, x[:0], "rotate")
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        sensitivity_ratio(net, bad, "rotate")
    with pytest.raises(ValueError, match="unknown output"):
        sensitivity_ratio(net, x, "rotate", output="probs")
    with pytest.raises(TypeError, match="images_per_pass"):
        sensitivity_ratio(net, x, "rotate", images_per_pass=2.5)


def test_references_is_the_deprecated_name_of_num_references():
    net, x = smooth_net(), smooth_image(b=2)
    with pytest.warns(DeprecationWarning, match="num_references"):
        old = sensitivity_ratio(net, x, "rotate", references=4)
    assert old.equals(sensitivity_ratio(net, x, "rotate", num_references=4))
