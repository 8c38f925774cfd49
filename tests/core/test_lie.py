"""lie_derivative and lee: finite differences, known answers, timm families, bad input."""

import copy

import pytest
import timm
import torch
from conftest import reinit_
from timm.models.mlp_mixer import MlpMixer
from torch import nn

from lielib import get_action, lee, lie_derivative, lie_derivative_double_backward, list_actions
from lielib.layout import Layout
from lielib.lie import fold_batchnorm, measuring

ALL = list_actions()


def image(b=2, c=3, h=9, w=9, seed=0, dtype=torch.float64):
    return torch.randn(b, c, h, w, dtype=dtype, generator=torch.Generator().manual_seed(seed))


def smooth_net(out_channels=4, classes=5):
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, out_channels, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.LazyLinear(classes)
    ).double()


@pytest.mark.parametrize("name", ALL)
def test_matches_finite_differences(name):
    f = smooth_net()
    x = image()
    f(x)  # materialise the lazy layer
    a = get_action(name)
    h = 1e-6
    fd = (f(a.act(x, h, stencil="central")) - f(a.act(x, -h, stencil="central"))) / (2 * h)
    ld = lie_derivative(f, x, name, stencil="central")
    torch.testing.assert_close(ld, fd, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", ["translate_x", "rotate", "scale", "saturate"])
def test_image_output_matches_transform_back(name):
    """d/dt T_-t f(T_t x) for an image-to-image f."""
    torch.manual_seed(1)
    conv = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.Tanh()).double()
    x = image()
    a = get_action(name)
    h = 1e-6

    def g(t):
        return a.act(conv(a.act(x, t, stencil="central")), -t, stencil="central")

    fd = (g(h) - g(-h)) / (2 * h)
    ld = lie_derivative(conv, x, name, out_layout="NCHW", stencil="central")
    inner = (..., slice(1, -1), slice(1, -1))
    torch.testing.assert_close(ld[inner], fd[inner], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("stencil", ["paper", "central"])
@pytest.mark.parametrize("name", ALL)
def test_fixed_additive_pattern(name, stencil):
    """f(x) = x + P is equivariant but for P: L f = -dP, the tangent of the pattern."""
    pattern = image(b=1, seed=7)
    x = image()
    ld = lie_derivative(lambda z: z + pattern, x, name, out_layout="NCHW", stencil=stencil)
    expected = -get_action(name).tangent(pattern.expand_as(x), stencil=stencil)
    torch.testing.assert_close(ld, expected, atol=1e-10, rtol=1e-10)


class CentrePixelNet(nn.Module):
    """Reads only the centre pixel, which every linear action fixes: invariant by construction."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 4).double()

    def forward(self, x):
        return self.fc(x[:, :, x.shape[2] // 2, x.shape[3] // 2]).softmax(-1)


LINEAR = [a for a in ALL if not a.startswith("translate") and a != "saturate"]


@pytest.mark.parametrize("name", LINEAR)
def test_invariant_model_has_zero_lie_derivative(name):
    torch.manual_seed(0)
    out = lie_derivative(CentrePixelNet(), image(), name)
    assert torch.count_nonzero(out) == 0


def test_scale_invariant_model_under_saturate():
    f = nn.Sequential(nn.Flatten(), nn.Linear(3 * 81, 4)).double()
    out = lie_derivative(lambda x: f(x / x.flatten(1).norm(dim=1)[:, None, None, None]), image(), "saturate")
    assert out.abs().max() < 1e-14


def test_relu_is_not_equivariant_to_subpixel_shifts():
    """Known non-zero: a pointwise ReLU commutes with integer shifts but not with the stencil."""
    x = image()
    ld = lie_derivative(torch.relu, x, "translate_x", out_layout="NCHW")
    assert ld.abs().max() > 0.1


def test_tokens_layout_moves_grid_and_keeps_prefix():
    layout = Layout.tokens(1, (3, 3))
    tokens = torch.randn(2, 10, 4, dtype=torch.float64)
    ld = lie_derivative(lambda z: z, tokens, "translate_x", in_layout=layout, out_layout=layout)
    assert ld.abs().max() < 1e-12  # the identity is equivariant
    shifted = lie_derivative(lambda z: z.sum(1), tokens, "translate_x", in_layout=layout)
    assert shifted.shape == (2, 4)


def tiny_timm(name, **kw):
    model = timm.create_model(name, num_classes=7, **kw)
    return reinit_(model, seed=0, scale=0.1).eval()


TIMM = {
    "resnet": lambda: tiny_timm("test_resnet"),
    "vit": lambda: tiny_timm("test_vit", img_size=32),
    "mixer": lambda: reinit_(
        MlpMixer(num_classes=7, img_size=32, patch_size=8, num_blocks=2, embed_dim=32), scale=0.1
    ).eval(),
    "convnext": lambda: tiny_timm("test_convnext"),
}


@pytest.fixture(scope="module", params=list(TIMM))
def timm_model(request):
    return request.param, TIMM[request.param]()


def test_lee_finite_for_timm_families(timm_model):
    name, model = timm_model
    x = image(b=2, h=32, w=32, dtype=torch.float32, seed=3)
    frame = lee(model, x)
    assert list(frame.columns) == ALL and len(frame) == 2
    assert frame.notna().all().all() and (frame.to_numpy() > 0).all(), name


def test_forward_mode_equals_double_backward(timm_model):
    name, model = timm_model
    x = image(b=1, h=32, w=32, dtype=torch.float32, seed=4)
    f = lambda z: model(z).softmax(-1)
    with measuring(model):
        for action in ["translate_x", "rotate", "saturate"]:
            fwd = lie_derivative(f, x, action)
            rev = lie_derivative_double_backward(f, x, action)
            torch.testing.assert_close(fwd, rev, atol=1e-6, rtol=1e-4, msg=f"{name} {action}")


def test_lee_reductions_and_any_class_count():
    f = smooth_net(classes=3)
    x = image()
    f(x)
    d = lie_derivative(lambda z: f(z).softmax(-1), x, "rotate")
    abs_ = lee(f, x, ["rotate"], reduce="mean_abs")["rotate"].to_numpy()
    sq = lee(f, x, ["rotate"], reduce="mean_sq")["rotate"].to_numpy()
    l2 = lee(f, x, ["rotate"], reduce="l2")["rotate"].to_numpy()
    torch.testing.assert_close(torch.tensor(abs_), d.abs().mean(-1))
    torch.testing.assert_close(torch.tensor(sq), d.square().mean(-1))
    torch.testing.assert_close(torch.tensor(l2), d.norm(dim=-1))
    logits = lee(f, x, ["rotate"], output="logits")["rotate"].to_numpy()
    dl = lie_derivative(f, x, "rotate")
    torch.testing.assert_close(torch.tensor(logits), dl.abs().mean(-1))


def test_lee_leaves_model_unchanged():
    model = tiny_timm("test_vit", img_size=32)
    model.train()
    for m in model.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = True
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = image(b=1, h=32, w=32, dtype=torch.float32)
    first = lee(model, x, ["rotate"])
    second = lee(model, x, ["rotate"])
    assert first.equals(second)
    assert model.training and all(m.training for m in model.modules())
    assert all(m.fused_attn for m in model.modules() if hasattr(m, "fused_attn"))
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_lee_bad_inputs():
    f = smooth_net()
    x = image()
    f(x)
    with pytest.raises(ValueError, match="unknown action 'spin'"):
        lee(f, x, ["spin"])
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        lee(f, x[0], ["rotate"])
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        lee(f, bad)
    with pytest.raises(ValueError, match="unknown reduce"):
        lee(f, x, reduce="max")
    with pytest.raises(ValueError, match="unknown output"):
        lee(f, x, output="probs")
    with pytest.raises(ValueError, match="actions is empty"):
        lee(f, x, [])
    with pytest.raises(ValueError, match="classifier output"):
        lee(nn.Conv2d(3, 3, 1).double(), x, ["rotate"])


def test_folding_batchnorm_changes_values_only_by_rounding():
    model = timm.create_model("test_resnet", num_classes=5).eval()
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):  # non-trivial running statistics
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen))
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = image(b=2, h=32, w=32, dtype=torch.float32)
    folded = lee(model, x, ["translate_x", "rotate"])
    plain = lee(model, x, ["translate_x", "rotate"], fold_bn=False)
    torch.testing.assert_close(folded.to_numpy(), plain.to_numpy(), rtol=1e-4, atol=0)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert isinstance(model.bn1, nn.BatchNorm2d)


def test_shared_derivatives_equal_one_derivative_per_action():
    model = timm.create_model("test_resnet", num_classes=5).eval()
    x = image(b=2, h=32, w=32, dtype=torch.float32, seed=6)
    shared = lee(model, x, fold_bn=False)
    own = lee(model, x, fold_bn=False, share=False)
    torch.testing.assert_close(shared.to_numpy(), own.to_numpy(), rtol=1e-4, atol=1e-9)


def test_shared_derivatives_check_the_tangent_images():
    from lielib.actions import AffineAction

    class NotLinear(AffineAction):  # claims rotate's generator, has another tangent
        def tangent(self, x, *, stencil="paper"):
            return get_action("translate_x").tangent(x, stencil=stencil)

    f = smooth_net()
    x = image()
    f(x)
    odd = NotLinear("odd", ((0, 1, 0), (-1, 0, 0)))
    frame = lee(f, x, ["shear_x", "shear_y", odd], output="logits")
    ref = lie_derivative(f, x, "translate_x").abs().mean(-1)
    torch.testing.assert_close(torch.tensor(frame["odd"].to_numpy()), ref)


def test_images_per_pass_changes_nothing_but_speed():
    model = timm.create_model("test_resnet", num_classes=5).eval()
    x = image(b=3, h=32, w=32, dtype=torch.float32, seed=7)
    whole = lee(model, x, ["translate_x", "rotate", "saturate"], images_per_pass=3)
    for n in (1, 2):
        split = lee(model, x, ["translate_x", "rotate", "saturate"], images_per_pass=n)
        torch.testing.assert_close(split.to_numpy(), whole.to_numpy(), rtol=1e-5, atol=1e-9)
    with pytest.raises(ValueError, match="images_per_pass must be >= 1"):
        lee(model, x, ["rotate"], images_per_pass=0)


def test_shared_derivatives_with_a_token_layout():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 6), nn.Tanh(), nn.Flatten(), nn.Linear(17 * 6, 4)).double()
    x = torch.randn(2, 17, 6, dtype=torch.float64)  # one prefix token and a 4x4 grid
    layout = Layout.tokens(1, (4, 4))
    shared = lee(net, x, in_layout=layout, output="logits")
    own = lee(net, x, in_layout=layout, output="logits", share=False)
    torch.testing.assert_close(shared.to_numpy(), own.to_numpy(), rtol=1e-10, atol=1e-12)
    ref = lie_derivative(net, x, "rotate", in_layout=layout).abs().mean(-1)
    torch.testing.assert_close(torch.tensor(shared["rotate"].to_numpy()), ref)


# Every entry point prepares the model as lee does, and rejects bad input clearly.


def fused_vit(train: bool):
    model = tiny_timm("test_vit", img_size=32)
    for m in model.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = True
        if isinstance(m, nn.Dropout):
            m.p = 0.5
    return model.train(train)


def softmax_of(model):
    return lambda z: model(z).softmax(-1)


@pytest.mark.parametrize("entry", [lie_derivative, lie_derivative_double_backward])
def test_entry_points_measure_a_fused_train_mode_vit_in_eval_mode(entry):
    model = fused_vit(train=True)
    x = image(b=1, h=32, w=32, dtype=torch.float32, seed=5)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    first = entry(model, x, "rotate")
    second = entry(model, x, "rotate")
    torch.testing.assert_close(first, second, rtol=0, atol=0)  # no dropout
    with measuring(model):
        expected = lie_derivative(model, x, "rotate")
    torch.testing.assert_close(first, expected, rtol=1e-4, atol=1e-7)
    assert model.training and all(m.training for m in model.modules())
    assert all(m.fused_attn for m in model.modules() if hasattr(m, "fused_attn"))
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("entry", [lie_derivative, lie_derivative_double_backward])
def test_entry_points_leave_batchnorm_statistics_alone(entry):
    model = timm.create_model("test_resnet", num_classes=5).train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = image(b=2, h=32, w=32, dtype=torch.float32, seed=2)
    out = entry(model, x, "translate_x")
    assert torch.isfinite(out).all() and out.abs().max() > 0
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert model.training


class TupleNet(nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.kind, self.fc = kind, nn.Linear(3 * 9 * 9, 4).double()

    def forward(self, x):
        z = self.fc(x.flatten(1))
        return (z, z) if self.kind == "tuple" else {"logits": z}


@pytest.mark.parametrize("kind", ["tuple", "dict"])
def test_models_that_return_containers_get_a_clear_error(kind):
    net, x = TupleNet(kind), image()
    for call in (lambda: lee(net, x, "rotate"), lambda: lie_derivative(net, x, "rotate"),
                 lambda: lie_derivative_double_backward(net, x, "rotate")):
        with pytest.raises(TypeError, match=f"returned a {kind}.*logits tensor"):
            call()


def test_bad_batches_and_arguments_get_clear_errors():
    f = smooth_net()
    x = image()
    f(x)
    for call in (lambda z: lee(f, z, "rotate"), lambda z: lie_derivative(f, z, "rotate"),
                 lambda z: lie_derivative_double_backward(f, z, "rotate")):
        with pytest.raises(ValueError, match="empty batch"):
            call(x[:0])
        bad = x.clone()
        bad[1, 2, 3, 4] = float("nan")
        with pytest.raises(ValueError, match="NaN"):
            call(bad)
    with pytest.raises(TypeError, match="images_per_pass must be a positive int"):
        lee(f, x, "rotate", images_per_pass=2.5)
    with pytest.raises(TypeError, match="images_per_pass must be a positive int"):
        lee(f, x, "rotate", images_per_pass=True)


def test_a_single_action_name_is_one_action():
    f = smooth_net()
    x = image()
    f(x)
    frame = lee(f, x, "rotate")
    assert list(frame.columns) == ["rotate"]
    assert list(lee(f, x, get_action("scale")).columns) == ["scale"]


def test_expanded_input_is_measured_like_a_copy():
    model = timm.create_model("test_resnet", num_classes=5).eval()
    one = image(b=1, h=32, w=32, dtype=torch.float32, seed=8)
    wide = one.expand(3, -1, -1, -1)
    frame = lee(model, wide, ["translate_x", "rotate"])
    ref = lee(model, wide.contiguous(), ["translate_x", "rotate"])
    assert frame.equals(ref)
    torch.testing.assert_close(lie_derivative(model, wide, "rotate"),
                               lie_derivative(model, wide.contiguous(), "rotate"))


# central differences cancel more than the paper's one-sided ones: float16 needs 0.1
@pytest.mark.parametrize(("dtype", "rtol"), [(torch.float16, 0.1), (torch.bfloat16, 0.3)])
def test_half_precision_models_match_float32(dtype, rtol):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = timm.create_model("test_resnet", num_classes=5).eval()
    x = image(b=2, h=32, w=32, dtype=torch.float32, seed=3)
    actions = ["translate_x", "rotate", "saturate"]
    ref = lee(model, x, actions)
    half = copy.deepcopy(model).to(dtype)
    torch.testing.assert_close(lee(half, x.to(dtype), actions).to_numpy(), ref.to_numpy(),
                               rtol=rtol, atol=0)
    d = lie_derivative(softmax_of(half), x.to(dtype), "rotate")
    assert d.dtype == dtype
    expected = lie_derivative(softmax_of(model), x, "rotate")
    torch.testing.assert_close(d.float().norm(dim=-1), expected.norm(dim=-1), rtol=rtol, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_precision_batchnorm_is_folded_in_float32(dtype):
    """Folding in half precision rounded gamma / sqrt(var + eps) first: 10x the error."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = timm.create_model("test_resnet", num_classes=5).eval()
    gen = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):  # small variances: a large folding scale
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen))
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) * 3 + 0.01)
    half = copy.deepcopy(model).to(dtype)
    folded = fold_batchnorm(half)
    expected = fold_batchnorm(copy.deepcopy(half).float()).to(dtype)
    got, want = dict(folded.named_parameters()), dict(expected.named_parameters())
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in got)
    assert all(p.dtype == dtype for p in folded.parameters())
    assert all(v.dtype == dtype for v in half.state_dict().values() if v.is_floating_point())
    x = image(b=4, h=32, w=32, dtype=torch.float32, seed=3)
    with torch.no_grad():
        ref = copy.deepcopy(model).double()(x.double())
        err = {fold: float((net(x.to(dtype)).double() - ref).norm() / ref.norm())
               for fold, net in ((True, folded), (False, half))}
    assert err[True] <= 1.5 * err[False]  # folded in float16: 2.4 times


def dropout_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 9 * 9, 16), nn.Dropout(0.5),
                         nn.Linear(16, 4)).double()


def test_a_trace_recorded_in_train_mode_raises_and_one_in_eval_mode_is_measured():
    x = image()
    traced = torch.jit.trace(dropout_net().train(), x, check_trace=False)
    for call in (lambda: lee(traced, x, "rotate"), lambda: lie_derivative(traced, x, "rotate"),
                 lambda: lee(nn.Sequential(traced), x, "rotate")):
        with pytest.raises(ValueError, match=r"recorded in train mode.*model.eval\(\)"):
            call()
    net = dropout_net().eval()
    traced = torch.jit.trace(net, x).train()
    first = lie_derivative(traced, x, "rotate")
    torch.testing.assert_close(first, lie_derivative(traced, x, "rotate"), rtol=0, atol=0)
    torch.testing.assert_close(first, lie_derivative(net, x, "rotate"))
    assert traced.training


class CachesOnEval(nn.Module):
    """Builds a buffer on eval() and drops it on train(), as escnn's equivariant layers do."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 9 * 9, 4).double()
        self.calls = []

    def train(self, mode: bool = True):
        super().train(mode)
        self.calls.append(mode)
        if mode and hasattr(self, "filter"):
            del self.filter
        elif not mode:
            self.register_buffer("filter", torch.tensor(2.0, dtype=torch.float64))
        return self

    def forward(self, x):
        return self.fc(x.flatten(1)) * (2.0 if self.training else self.filter)


@pytest.mark.parametrize("start", ["train", "eval"])
def test_measuring_switches_modes_through_the_modules_own_methods(start):
    from lielib import layerwise_lee, sensitivity_ratio
    from lielib.metrics import eq_t

    net, x = CachesOnEval(), image()
    net.train(start == "train")
    state = set(net.state_dict())
    for call in (lambda: lee(net, x, "rotate"), lambda: lie_derivative(net, x, "rotate"),
                 lambda: sensitivity_ratio(net, x, "rotate"), lambda: eq_t(net, x),
                 lambda: layerwise_lee(net, x, "rotate", modules=["fc"])):
        call()
        assert set(net.state_dict()) == state
        assert net.training == (start == "train")
    if start == "train":
        assert net.calls[-2:] == [False, True]


def test_duplicated_actions_and_meta_tensors_are_clear_errors():
    from lielib import sensitivity_ratio

    f, x = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.Linear(2 * 7 * 7, 4)).double(), image()
    for call in (lee, sensitivity_ratio):
        with pytest.raises(ValueError, match="'rotate' more than once"):
            call(f, x, ["rotate", "translate_x", get_action("rotate")])
    meta = copy.deepcopy(f).to("meta")
    for call in (lambda: lee(meta, x, "rotate"), lambda: lie_derivative(meta, x, "rotate"),
                 lambda: sensitivity_ratio(meta, x, "rotate")):
        with pytest.raises(ValueError, match="meta device and hold no values"):
            call()
    with pytest.raises(ValueError, match="meta device"):
        lee(meta, x.to("meta"), "rotate")
