"""Layer-wise decomposition: sum rule, exact vs probes, residual, hooks, model unchanged."""

from __future__ import annotations

import copy

import pandas as pd
import pytest
import torch
from torch import nn
from torch.func import jvp
from toy_models import DT, PosToy, image, reinit, timm_model, toy

from lielib.actions import get_action, list_actions
from lielib.decompose import (
    RESIDUAL,
    contributions_frame,
    layerwise_contributions,
    layerwise_lee,
)
from lielib.layout import Layout
from lielib.selection import LAYER_KINDS, UnresolvedLayoutError
from lielib.shifts import layerwise_shift_error
from lielib.tangents import layout_tangent

pytest.importorskip("timm")


@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_sum_rule_sequential_toy_no_residual(mode):
    model, x = toy(), image(2)
    d = layerwise_contributions(model, x, "rotate", mode=mode)
    assert d.mode == mode
    assert d.total.abs().max() > 1e-4
    torch.testing.assert_close(d.contributions.sum(0), d.total, rtol=1e-9, atol=1e-12)
    assert [s.layer_kind for s in d.sites][:5] == ["conv", "activation", "conv", "norm",
                                                   "activation"]


def test_forward_and_reverse_agree():
    model, x = toy(), image(2)
    a = layerwise_contributions(model, x, "translate_x", mode="forward", modules_per_pass=3)
    b = layerwise_contributions(model, x, "translate_x", mode="reverse")
    torch.testing.assert_close(a.contributions, b.contributions, rtol=1e-9, atol=1e-13)


def test_residual_is_the_uncovered_positional_add():
    torch.manual_seed(0)
    model, x = reinit(PosToy().to(DT)), image(2)
    d = layerwise_contributions(model, x, "translate_y", stencil="paper")
    # The add y = h + pos has L add = -tau(pos); push it through the rest of the network.
    act = get_action("translate_y")
    with torch.no_grad():
        h = model.conv(x) + model.pos

        def rest(z):
            return model.fc(model.pool(model.act(model.conv2(z)))).softmax(-1)

        v = -layout_tangent(act, model.pos.expand_as(h), Layout("NCHW"), "paper")
        expected = jvp(rest, (h,), (v,))[1]
    torch.testing.assert_close(d.residual, expected, rtol=1e-8, atol=1e-12)
    assert d.residual.abs().max() > 1e-6


@pytest.mark.parametrize("name", ["test_resnet", "test_convnext", "test_efficientnet", "swin"])
def test_sum_rule_timm_models_covered_by_modules(name):
    model, x = timm_model(name), image(1, 56 if name == "swin" else 32)
    d = layerwise_contributions(model, x, "rotate", modules_per_pass=64)
    assert d.total.abs().max() > 1e-8
    assert d.residual.abs().max() <= 1e-9 * d.total.abs().max()


def test_sum_rule_vit_residual_is_the_position_embedding():
    model, x = timm_model("test_vit"), image(1, 32)
    # a 2 x 2 token grid: the central difference with reflection vanishes there, the paper's not
    d = layerwise_contributions(model, x, "translate_x", modules_per_pass=64, stencil="paper")
    assert d.residual.abs().max() > 1e-6 * d.total.abs().max()
    with torch.no_grad():
        model.pos_embed.zero_()
    d0 = layerwise_contributions(model, x, "translate_x", modules_per_pass=64)
    assert d0.total.abs().max() > 1e-8
    assert d0.residual.abs().max() <= 1e-9 * d0.total.abs().max()
    assert d0.sites[0].name == "patch_embed" and d0.sites[0].layer_kind == "embed"


def test_sum_rule_mixer_residual_is_the_token_mean():
    model, x = timm_model("mixer"), image(1, 32)
    d = layerwise_contributions(model, x, "saturate")
    act = get_action("saturate")
    rec = {}
    h = model.norm.register_forward_hook(lambda m, a, o: rec.setdefault("y", o.detach()))
    try:
        with torch.no_grad():
            model(x)
    finally:
        h.remove()
    y, lay = rec["y"], Layout.tokens(0, (4, 4))
    with torch.no_grad():
        expected = jvp(lambda t: model.head(t.mean(1)).softmax(-1), (y,),
                       (layout_tangent(act, y, lay, "paper"),))[1]
    torch.testing.assert_close(d.residual, expected, rtol=1e-8, atol=1e-12)


def test_probes_agree_with_exact_within_statistical_error():
    model, x = toy(), image(1)
    n = 400
    e = layerwise_contributions(model, x, "rotate")
    p = layerwise_contributions(model, x, "rotate", method="probes", num_probes=n, seed=3)
    ve, vp = e.values[:-1, 0], p.values[:-1, 0]
    # (z^T v)^2 = ||v||^2 chi^2_1: relative standard deviation sqrt(2 / n) per module.
    tol = 5 * (2 / n) ** 0.5 * ve + 1e-14
    assert torch.all((vp - ve).abs() <= tol), (vp, ve)
    assert p.values[-1, 0] < 1e-20  # residual of a fully covered Sequential


def test_saturate_known_zero_for_homogeneous_toy():
    model = reinit(nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.ReLU(), nn.Conv2d(4, 4, 3, bias=False),
        nn.ReLU(),
    ).to(DT))
    # Positively homogeneous layers commute with x -> e^t x: every L m is exactly zero.
    net = nn.Sequential(model, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3).to(DT))
    frame = layerwise_lee(net, image(1), "saturate")
    convs = frame[frame.module.str.startswith("0.")]
    assert (convs.value.abs() < 1e-28).all()
    # Flatten turns the pooled map into invariant features, which intensity does not act on.
    assert frame.loc[frame.module == "2", "value"].iloc[0] > 0


def test_frame_columns_and_kinds():
    frame = layerwise_lee(toy(), image(2), "rotate")
    assert list(frame.columns[:7]) == ["image", "action", "module", "module_type", "layer_kind",
                                       "order", "call"]
    assert set(frame.action) == {"rotate"}
    assert "value" in frame.columns
    assert set(frame.layer_kind) <= set(LAYER_KINDS)
    assert (frame.groupby("image").module.last() == "(residual)").all()
    assert frame.groupby("image").order.apply(lambda s: s.is_monotonic_increasing).all()
    assert frame.loc[frame.module == "2", "downsampling"].all()


def test_contributions_frame_is_the_layerwise_lee_frame():
    model, x = toy(), image(2)
    dec = layerwise_contributions(model, x, "rotate")
    frame = contributions_frame(dec.sites, dec.values)
    assert frame.equals(layerwise_lee(model, x, "rotate").drop(columns="action"))
    assert (frame.groupby("image").module.last() == RESIDUAL).all()
    bare = contributions_frame(dec.sites, dec.values, residual_row=False)
    assert RESIDUAL not in set(bare.module) and len(bare) == len(frame) - 2


def test_model_unchanged_and_hooks_removed():
    model, x = toy(inplace=True), image(2)
    model.train()
    state = copy.deepcopy(model.state_dict())
    model.eval()
    with torch.no_grad():
        before = model(x)
    model.train()
    layerwise_lee(model, x, "rotate")
    layerwise_lee(model, x, "rotate", method="probes", num_probes=3)
    assert model.training and model[1].inplace
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), before, rtol=0, atol=0)


def test_hooks_removed_on_error():
    model = timm_model("test_vit")
    with pytest.raises(UnresolvedLayoutError, match="blocks.0.attn.attn_drop"):
        layerwise_lee(model, image(1, 32), "rotate", modules=["blocks.0.attn.attn_drop"])
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks


def test_inplace_activation_gives_same_result():
    x = image(2)
    a = layerwise_lee(toy(inplace=True), x, "scale")
    b = layerwise_lee(toy(inplace=False), x, "scale")
    assert a.value.tolist() == b.value.tolist()


def test_repeated_calls_identical():
    model, x = toy(), image(2)
    for method in ("exact", "probes"):
        a = layerwise_lee(model, x, "rotate", method=method, num_probes=5, seed=1)
        b = layerwise_lee(model, x, "rotate", method=method, num_probes=5, seed=1)
        assert a.equals(b)


def test_shift_error_zero_for_circular_and_stride_multiples():
    model = reinit(nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, padding_mode="circular"), nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1), nn.AvgPool2d(2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(4, 2),
    ).to(DT))
    frame = layerwise_shift_error(model, image(1)).set_index("module").value
    assert frame["0"] < 1e-25 and frame["1"] < 1e-25  # circular conv, pointwise ReLU
    assert frame["3"] < 1e-25  # 2-px shift into a 2x2 average pool moves its output by 1 px
    assert frame["2"] > 1e-3  # zero padding is not circular-shift equivariant
    assert frame["5"] < 1e-25  # a 1x1 map does not move
    assert frame.isna()["6"]  # Linear on features: no spatial input


@pytest.mark.parametrize("method", ["exact", "probes"])
def test_runs_under_no_grad(method):
    """Reverse mode summed each class outside its enable_grad block: failed under no_grad."""
    model, x = toy(), image(2)
    kw = {"mode": "reverse"} if method == "exact" else {"method": "probes", "num_probes": 3}
    ref = layerwise_contributions(model, x, "rotate", **kw)
    with torch.no_grad():
        got = layerwise_contributions(model, x, "rotate", **kw)
    assert got.mode == ref.mode
    torch.testing.assert_close(got.values, ref.values)
    assert torch.is_grad_enabled()


def test_expanded_input_matches_a_contiguous_copy():
    model, x = toy(), image(1)
    xe = x.expand(2, -1, -1, -1)
    a = layerwise_lee(model, xe, "translate_x")
    b = layerwise_lee(model, xe.contiguous(), "translate_x")
    pd.testing.assert_frame_equal(a, b)
    s = layerwise_shift_error(model, xe)
    pd.testing.assert_frame_equal(s, layerwise_shift_error(model, xe.contiguous()))


@pytest.mark.parametrize(
    "args, kwargs, error, match",
    [
        (("x0",), {}, ValueError, "empty batch"),
        (("nan",), {}, ValueError, "NaN"),
        (("float32",), {}, TypeError, r"convert x with x.to\(torch.float64\)"),
        (("x",), {"modules_per_pass": "4"}, ValueError, "modules_per_pass"),
        (("x",), {"method": "probes", "num_probes": 0}, ValueError, "num_probes"),
        (("x",), {"modules": "0"}, TypeError, "list of names"),
        (("x",), {"modules": []}, TypeError, "list of names"),
        (("x",), {"mode": "backward"}, ValueError, "mode"),
        (("fn",), {}, TypeError, "torch.nn.Module"),
    ],
    ids=["empty", "nan", "dtype", "chunk", "probes", "modules-str", "modules-empty", "mode",
         "not-module"],
)
def test_bad_input_is_a_clear_error(args, kwargs, error, match):
    model, x = toy(), image(2)
    inputs = {"x": x, "x0": x[:0], "nan": x * float("nan"), "float32": x.float(), "fn": x}
    m = (lambda z: z) if args[0] == "fn" else model
    with pytest.raises(error, match=match):
        layerwise_contributions(m, inputs[args[0]], "rotate", **kwargs)


# --- the signed budget (lielib.budget) -------------------------------------------------------


@pytest.mark.parametrize("stencil", ["paper", "central"])
@pytest.mark.parametrize("model_fn", [toy, lambda: reinit(PosToy().to(DT))], ids=["toy", "pos"])
def test_signed_shares_sum_to_one(model_fn, stencil):
    from lielib.budget import budget_frame, signed_shares

    model, x = model_fn(), image(3)
    dec = layerwise_contributions(model, x, "rotate", stencil=stencil)
    s = signed_shares(dec)
    assert s.shape == (len(dec.sites) + 1, 3)
    torch.testing.assert_close(s.sum(0), torch.ones(3, dtype=DT), rtol=0, atol=1e-10)
    # Each share is the projection of its term on L f, computed here by hand.
    terms = torch.cat([dec.contributions, dec.residual[None]])
    norm2 = (dec.total**2).sum(-1)
    torch.testing.assert_close(s[2], (terms[2] * dec.total).sum(-1) / norm2)
    frame = budget_frame(dec)
    assert frame.groupby("image").signed.sum().sub(1).abs().max() < 1e-10
    assert frame.drop(columns=["signed", "total", "squared_ratio"]).equals(
        contributions_frame(dec.sites, dec.values))


@pytest.mark.parametrize("name", ["test_resnet", "test_vit"])
def test_signed_shares_sum_to_one_timm(name):
    from lielib.budget import signed_shares, squared_ratio

    model, x = timm_model(name), image(2, 32)
    dec = layerwise_contributions(model, x, "translate_x")
    torch.testing.assert_close(signed_shares(dec).sum(0), torch.ones(x.shape[0], dtype=x.dtype),
                               rtol=0, atol=1e-8)
    # Cauchy-Schwarz: the squared norms of M + 1 terms that add up to L f sum to at least
    # ||L f||^2 / (M + 1).
    assert (squared_ratio(dec) * (len(dec.sites) + 1) >= 1 - 1e-9).all()


def test_squared_ratio_one_for_a_single_term_and_large_under_cancellation():
    from lielib.budget import signed_shares, squared_ratio

    x = image(2)
    net = reinit(nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.Flatten(), nn.Linear(196, 5))
                 .to(DT))
    dec = layerwise_contributions(net, x, "translate_x", modules=["0"])
    # One module: the residual is what it does not cover (the flatten of a map), so the
    # ratio is ||c||^2 / ||c + r||^2 and the signed share <c, c + r> / ||c + r||^2.
    c, r = dec.contributions[0], dec.residual
    torch.testing.assert_close(squared_ratio(dec), (c**2).sum(-1) / ((c + r) ** 2).sum(-1))
    torch.testing.assert_close(signed_shares(dec)[0], (c * (c + r)).sum(-1) / ((c + r) ** 2).sum(-1))
    # Two copies of a layer that cancel: L f = 0 has no budget (NaN), never a division by 0.
    lin = nn.Linear(3 * 16 * 16, 4).to(DT)
    cancel = nn.Sequential(nn.Flatten(), _Cancel(lin)).eval()
    dec = layerwise_contributions(cancel, x, "rotate", modules=["1.a", "1.b"], output="logits")
    assert torch.isnan(signed_shares(dec)).all() and torch.isnan(squared_ratio(dec)).all()


class _Cancel(nn.Module):
    def __init__(self, lin: nn.Linear):
        super().__init__()
        self.a, self.b = lin, copy.deepcopy(lin)

    def forward(self, z):
        return self.a(z) - self.b(z)


def test_signed_shares_refuse_probe_estimates():
    from lielib.budget import signed_shares

    dec = layerwise_contributions(toy(), image(1), "rotate", method="probes", num_probes=2)
    with pytest.raises(ValueError, match="exact"):
        signed_shares(dec)


# --- clear errors and one API family ---------------------------------------------------------


class DictOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = toy()

    def forward(self, x):
        return {"logits": self.net(x)}


def test_models_layerwise_cannot_measure_get_clear_errors():
    model, x = toy(inplace=False), image(2)
    with pytest.raises(TypeError, match=r"returned a dict.*model\(x\)\['logits'\]"):
        layerwise_lee(DictOut(), x, "rotate")
    for jit in (torch.jit.script(model), torch.jit.trace(model, x)):
        with pytest.raises(TypeError, match="torch.jit modules.*eager nn.Module"):
            layerwise_lee(jit, x, "rotate")
        with pytest.raises(TypeError, match="torch.jit modules"):
            layerwise_shift_error(jit, x)
    with pytest.raises(TypeError, match="must be a torch.nn.Module.*wrap a function"):
        layerwise_lee(lambda z: model(z), x, "rotate")
    meta = copy.deepcopy(model).to("meta")
    with pytest.raises(ValueError, match="meta device and hold no values.*to_empty"):
        layerwise_lee(meta, x, "rotate")
    with pytest.raises(ValueError, match="meta device"):
        layerwise_lee(model, x.to("meta"), "rotate")
    with pytest.raises(ValueError, match="'rotate' more than once"):
        layerwise_lee(model, x, ["rotate", "translate_x", "rotate"])


def test_seeds_are_any_integer_or_a_generator():
    import numpy as np

    model, x = toy(), image(2)
    kw = {"method": "probes", "num_probes": 3}
    ref = layerwise_lee(model, x, "rotate", seed=4, **kw)
    assert ref.equals(layerwise_lee(model, x, "rotate", seed=np.int64(4), **kw))
    assert ref.equals(layerwise_lee(model, x, "rotate", seed=torch.Generator().manual_seed(4), **kw))
    for bad, error in ((1.5, TypeError), (True, TypeError), (-1, ValueError)):
        with pytest.raises(error, match="seed must be"):
            layerwise_lee(model, x, "rotate", seed=bad, **kw)


def test_several_actions_stack_one_frame_per_action():
    model, x = toy(), image(2)
    both = layerwise_lee(model, x, ["rotate", "scale"])
    assert list(both.action.unique()) == ["rotate", "scale"]
    for name in ("rotate", "scale"):
        one = layerwise_lee(model, x, name)
        assert both[both.action == name].reset_index(drop=True).equals(one)
    assert list(layerwise_lee(model, x).action.unique()) == list_actions()


def test_token_input_layout_is_measured_on_its_grid():
    """A model that takes tokens: in_layout says where the image grid is."""

    class TokenNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.act = nn.Tanh()
            self.fc = nn.Linear(4, 3)

        def forward(self, t):  # (B, 1 + 16, 3) -> image -> logits
            img = t[:, 1:].reshape(t.shape[0], 4, 4, 3).permute(0, 3, 1, 2)
            return self.fc(self.act(self.conv(img)).mean((-2, -1))) + t[:, 0].sum(-1, keepdim=True)

    model = reinit(TokenNet().to(DT))
    tokens = torch.randn(2, 17, 3, dtype=DT, generator=torch.Generator().manual_seed(0))
    layout = Layout.tokens(1, (4, 4))
    frame = layerwise_lee(model, tokens, "rotate", in_layout=layout, modules=["conv", "act"])
    img = tokens[:, 1:].reshape(2, 4, 4, 3).permute(0, 3, 1, 2)
    ref = layerwise_lee(_ImageInput(model, tokens[:, :1]), img, "rotate",
                        modules=["inner.conv", "inner.act"])
    torch.testing.assert_close(frame.value.to_numpy(), ref.value.to_numpy())


class _ImageInput(nn.Module):
    """The token model fed an image and fixed prefix tokens."""

    def __init__(self, inner, prefix):
        super().__init__()
        self.inner, self.prefix = inner, prefix

    def forward(self, img):
        t = img.permute(0, 2, 3, 1).reshape(img.shape[0], -1, img.shape[1])
        return self.inner(torch.cat([self.prefix, t], 1))


def test_chunk_size_is_the_deprecated_name_of_modules_per_pass():
    model, x = toy(), image(2)
    with pytest.warns(DeprecationWarning, match="modules_per_pass"):
        old = layerwise_contributions(model, x, "rotate", mode="forward", chunk_size=2)
    new = layerwise_contributions(model, x, "rotate", mode="forward", modules_per_pass=2)
    torch.testing.assert_close(old.values, new.values, rtol=0, atol=0)
