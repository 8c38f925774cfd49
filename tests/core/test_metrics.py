"""Sample-based metrics: known answers, transform conventions, determinism, bad input."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from lielib import lee
from lielib.metrics import (
    eq_r,
    eq_t,
    eq_t_frac,
    integer_translate,
    psnr_db,
    sampled_invariance,
    shift_consistency,
)

F64 = torch.float64


def image(b=2, c=3, h=16, w=16, seed=0, dtype=F64):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, h, w, generator=gen, dtype=dtype)


class PoolLinear(nn.Module):
    """Global average pool + linear: invariant to every permutation of the pixels."""

    def __init__(self, c=3, k=5, seed=0, dtype=F64):
        super().__init__()
        torch.manual_seed(seed)
        self.head = nn.Linear(c, k, dtype=dtype)

    def forward(self, x):
        return self.head(x.mean(dim=(-2, -1)))


class FlatLinear(nn.Module):
    """Linear on the flattened pixels: sensitive to translations."""

    def __init__(self, c=3, h=16, w=16, k=5, seed=0, dtype=F64):
        super().__init__()
        torch.manual_seed(seed)
        self.head = nn.Linear(c * h * w, k, dtype=dtype)
        with torch.no_grad():
            self.head.weight.mul_(20.0)  # large enough that shifts change the argmax

    def forward(self, x):
        return self.head(x.flatten(1))


class ScaleInvariant(nn.Module):
    """Linear on x / |x|: exactly invariant under the intensity scaling ``saturate``."""

    def __init__(self, c=3, h=16, w=16, k=4):
        super().__init__()
        torch.manual_seed(1)
        self.head = nn.Linear(c * h * w, k, dtype=F64)

    def forward(self, x):
        z = x.flatten(1)
        return self.head(z / z.norm(dim=1, keepdim=True))


# --- transforms -------------------------------------------------------------------------


def test_integer_translate_zero_fill_on_asymmetric_input():
    x = torch.arange(12.0).view(1, 1, 3, 4)
    y = integer_translate(x, 1, -1)  # one right, one up
    expected = torch.tensor([[0.0, 4, 5, 6], [0, 8, 9, 10], [0, 0, 0, 0]])
    torch.testing.assert_close(y[0, 0], expected)
    assert integer_translate(x, 4, 0).abs().sum() == 0


def test_psnr_db_known_values():
    mse = torch.tensor([0.01, 1.0, 0.0], dtype=F64)
    torch.testing.assert_close(psnr_db(mse), torch.tensor([20.0, 0.0, math.inf], dtype=F64))
    torch.testing.assert_close(
        psnr_db(torch.tensor([1.0], dtype=F64), peak=2.0),
        torch.tensor([20 * math.log10(2)], dtype=F64),
    )


# --- metrics: known answers -------------------------------------------------------------


def test_invariant_model_is_fully_shift_consistent():
    frame = shift_consistency(PoolLinear(), image(b=3, dtype=torch.float32).double())
    assert list(frame.columns) == ["image", "consistency", "consistency_x", "consistency_y"]
    assert frame["image"].tolist() == [0, 1, 2]
    assert (frame[["consistency", "consistency_x", "consistency_y"]] == 1.0).all().all()


def test_translation_sensitive_model_is_inconsistent():
    x, model = image(b=4), FlatLinear()
    with_zero = shift_consistency(model, x)
    without = shift_consistency(model, x, include_zero=False)
    assert with_zero["consistency"].mean() < 1.0
    # shift 0 always agrees: the counts are k / 8 with k >= 1, and (1 + 7 c) / 8
    counts = with_zero["consistency_x"] * 8
    assert ((counts - counts.round()).abs() < 1e-12).all() and (counts >= 1).all()
    pd.testing.assert_series_equal(
        with_zero["consistency_x"], (1 + 7 * without["consistency_x"]) / 8, check_names=False
    )
    only_y = shift_consistency(model, x, axes=("y",), max_shift=3)
    assert list(only_y.columns) == ["image", "consistency", "consistency_y"]


def test_eq_t_exact_invariance_gives_inf():
    # integer pixel values in the centre, zero border wider than the largest shift (32/8 = 4):
    # the pooled sums are exact in float64, so p(T x) == p(x) bit for bit.
    gen = torch.Generator().manual_seed(0)
    x = torch.zeros(2, 3, 32, 32, dtype=F64)
    x[..., 8:24, 8:24] = torch.randint(-3, 4, (2, 3, 16, 16), generator=gen).double()
    frame = eq_t(PoolLinear(), x, num_samples=6)
    assert list(frame.columns) == ["image", "eq_t", "eq_t_mse"]
    assert (frame["eq_t_mse"] == 0).all() and (frame["eq_t"] == math.inf).all()


@pytest.mark.parametrize("metric", [eq_t, eq_t_frac, eq_r], ids=lambda f: f.__name__)
def test_invariant_model_scores_higher_than_sensitive_one(metric):
    x = image(b=2)
    invariant = metric(PoolLinear(), x, num_samples=4)
    sensitive = metric(FlatLinear(), x, num_samples=4)
    name = metric.__name__
    assert torch.isfinite(torch.tensor(sensitive[name].values)).all()
    assert (invariant[name] > sensitive[name] + 10).all()
    if metric is eq_t_frac:  # the periodic shift keeps the mean: PoolLinear is invariant
        assert (invariant[name] > 100).all()


def test_sampled_invariance_tends_to_analytic_derivative():
    # saturate: d/dt softmax(W e^t x + b) at 0 = (diag(p) - p p^T) W x for a linear model
    x, model = image(b=2), FlatLinear()
    frame = sampled_invariance(model, x, "saturate", t_max=1e-6, num_samples=4)
    assert list(frame.columns) == [
        "image",
        "action",
        "finite_difference_lee",
        "mean_abs_change",
        "prediction_unchanged",
    ]
    assert (frame["action"] == "saturate").all()
    assert (frame["prediction_unchanged"] == 1.0).all()
    with torch.no_grad():
        p = model(x).softmax(-1)
        wx = x.flatten(1) @ model.head.weight.T
        dp = p * wx - p * (p * wx).sum(-1, keepdim=True)
    torch.testing.assert_close(
        torch.tensor(frame["finite_difference_lee"].to_numpy()),
        dp.abs().mean(-1),
        rtol=1e-4,
        atol=0,
    )


@pytest.mark.slow
def test_sampled_invariance_matches_lee_mean_abs():
    x, model = image(b=2), FlatLinear()
    frame = sampled_invariance(model, x, "saturate", t_max=1e-6, num_samples=4)
    reference = lee(model, x, ["saturate"], reduce="mean_abs")["saturate"].to_numpy()
    torch.testing.assert_close(
        torch.tensor(frame["finite_difference_lee"].to_numpy()),
        torch.tensor(reference),
        rtol=1e-4,
        atol=0,
    )


def test_sampled_invariance_of_invariant_model():
    x = image(b=2)
    frame = sampled_invariance(ScaleInvariant(), x, "saturate", t_max=0.5, num_samples=5)
    assert (frame["finite_difference_lee"] < 1e-12).all()
    assert (frame["prediction_unchanged"] == 1.0).all()
    sensitive = sampled_invariance(FlatLinear(), x, "translate_x", t_max=0.5, num_samples=5)
    assert (sensitive["finite_difference_lee"] > 1e-3).all()
    assert (sensitive["mean_abs_change"] > 0).all()


# --- determinism, batching, model state ---------------------------------------------------

CALLS = {
    "eq_t": lambda m, x, s: eq_t(m, x, num_samples=3, seed=s),
    "eq_t_frac": lambda m, x, s: eq_t_frac(m, x, num_samples=3, seed=s),
    "eq_r": lambda m, x, s: eq_r(m, x, num_samples=3, seed=s),
    "sampled": lambda m, x, s: sampled_invariance(m, x, "rotate", t_max=0.3, num_samples=3, seed=s),
}


@pytest.mark.parametrize("name", CALLS)
def test_seeded_deterministic_and_batch_independent(name):
    call, x, model = CALLS[name], image(b=3), FlatLinear()
    first = call(model, x, 7)
    pd.testing.assert_frame_equal(first, call(model, x, 7))
    assert not first.equals(call(model, x, 8))
    alone = call(model, x[1:2], 7)
    numeric = first.select_dtypes("number").columns.drop("image")
    torch.testing.assert_close(
        torch.tensor(alone[numeric].to_numpy()), torch.tensor(first[numeric].to_numpy()[1:2])
    )


class Records(nn.Module):
    def __init__(self):
        super().__init__()
        self.head = nn.Linear(3, 2, dtype=F64)
        self.drop = nn.Dropout(0.5)
        self.seen_training = []
        self.seen_grad = []

    def forward(self, x):
        self.seen_training.append(self.training)
        self.seen_grad.append(torch.is_grad_enabled())
        return self.head(self.drop(x.mean(dim=(-2, -1))))


def test_runs_in_eval_mode_without_grad_and_restores_model():
    model = Records().train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    shift_consistency(model, image(b=2), max_shift=2)
    eq_r(model, image(b=2), num_samples=2)
    assert model.training and not any(model.seen_training) and not any(model.seen_grad)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, state[k])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_same_values_on_gpu():
    x, model = image(b=2), FlatLinear()
    for call in CALLS.values():
        cpu = call(model, x, 3)
        gpu = call(model.cuda(), x.cuda(), 3)
        model.cpu()
        numeric = cpu.select_dtypes("number").columns
        torch.testing.assert_close(
            torch.tensor(gpu[numeric].to_numpy()),
            torch.tensor(cpu[numeric].to_numpy()),
            rtol=1e-6,
            atol=1e-9,
        )


# --- bad input --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "metric",
    [
        shift_consistency,
        eq_t,
        eq_t_frac,
        eq_r,
        lambda m, x: sampled_invariance(m, x, "rotate", t_max=0.1),
    ],
    ids=["shift_consistency", "eq_t", "eq_t_frac", "eq_r", "sampled_invariance"],
)
def test_bad_input_raises(metric):
    model = PoolLinear()
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        metric(model, image()[0])
    bad = image()
    bad[0, 0, 0, 0] = math.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        metric(model, bad)
    with pytest.raises(TypeError, match="floating point"):
        metric(model, torch.zeros(1, 3, 8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match=r"logits \(B, num_classes\)"):
        metric(nn.Identity(), image())


def test_bad_arguments_raise():
    model, x = PoolLinear(), image()
    with pytest.raises(ValueError, match="axes"):
        shift_consistency(model, x, axes=("z",))
    with pytest.raises(ValueError, match="no shifts"):
        shift_consistency(model, x, max_shift=0, include_zero=False)
    with pytest.raises(ValueError, match="num_samples must be a positive integer"):
        eq_t(model, x, num_samples=0)
    with pytest.raises(ValueError, match="max_frac"):
        eq_t_frac(model, x, max_frac=math.nan)
    with pytest.raises(ValueError, match="max_angle"):
        eq_r(model, x, max_angle=-1.0)
    with pytest.raises(ValueError, match="up must be a positive integer"):
        eq_r(model, x, up=0)
    with pytest.raises(ValueError, match="t_max"):
        sampled_invariance(model, x, "rotate", t_max=0.0)
    with pytest.raises(ValueError, match="unknown action"):
        sampled_invariance(model, x, "spin", t_max=0.1)
    with pytest.raises(ValueError, match="unknown output"):
        sampled_invariance(model, x, "rotate", t_max=0.1, output="probs")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_sampled_invariance_in_half_precision_matches_float32(dtype):
    """The resampling ran matrix_exp in half precision: NaN for bf16 on a CPU."""
    x = image(dtype=torch.float32).to(dtype)
    half = sampled_invariance(FlatLinear(dtype=dtype), x, "rotate", t_max=0.2, num_samples=4)
    full = sampled_invariance(FlatLinear(dtype=torch.float32), x.float(), "rotate", t_max=0.2, num_samples=4)
    assert np.isfinite(half.finite_difference_lee).all()
    # the model itself runs in half precision (a 768-term dot product, weights x 20)
    np.testing.assert_allclose(half.finite_difference_lee, full.finite_difference_lee, rtol=0.5)


@pytest.mark.parametrize(
    "metric",
    [shift_consistency, eq_t, eq_r, lambda m, x: sampled_invariance(m, x, "rotate", t_max=0.1)],
    ids=["shift_consistency", "eq_t", "eq_r", "sampled_invariance"],
)
def test_model_mismatch_and_empty_batch_are_clear_errors(metric):
    model = PoolLinear()
    with pytest.raises(TypeError, match=r"x.to\(torch.float64\)"):
        metric(model, image().float())
    with pytest.raises(TypeError, match="torch.nn.Module"):
        metric(lambda z: z.mean((-2, -1)), image())
    with pytest.raises(ValueError, match="non-empty"):
        metric(model, image()[:0])


def test_seed_and_integer_shift_arguments_are_checked():
    model, x = PoolLinear(), image()
    with pytest.raises(TypeError, match="seed must be an int or a torch.Generator"):
        eq_t(model, x, seed="0")
    with pytest.raises(TypeError, match="whole pixels"):
        integer_translate(x, 0.5, 0)


class NaNOutput(nn.Module):
    """Finite weights, NaN logits: no metric may read this as invariance."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(3, 5, dtype=F64)

    def forward(self, x):
        return self.head(x.mean(dim=(-2, -1))) * math.nan


@pytest.mark.parametrize(
    "metric",
    [shift_consistency, eq_t, eq_t_frac, eq_r,
     lambda m, x: sampled_invariance(m, x, "rotate", t_max=0.1)],
    ids=["shift_consistency", "eq_t", "eq_t_frac", "eq_r", "sampled_invariance"],
)
def test_a_model_with_nan_outputs_raises_instead_of_scoring_invariant(metric):
    with pytest.raises(FloatingPointError, match="NaN or infinite"):
        metric(NaNOutput(), image())
    with pytest.raises(FloatingPointError, match="not finite"):
        lee(NaNOutput(), image(), ["rotate"])


@pytest.mark.parametrize(
    "metric",
    [eq_t, eq_t_frac, eq_r, lambda m, x, seed: sampled_invariance(m, x, "rotate", t_max=0.1,
                                                                 seed=seed)],
    ids=["eq_t", "eq_t_frac", "eq_r", "sampled_invariance"],
)
def test_seed_is_any_integer_or_a_generator(metric):
    model, x = FlatLinear(), image()
    ref = metric(model, x, seed=7)
    pd.testing.assert_frame_equal(metric(model, x, seed=np.int64(7)), ref)
    pd.testing.assert_frame_equal(metric(model, x, seed=torch.Generator().manual_seed(7)), ref)
    with pytest.raises(ValueError, match="seed must be >= 0"):
        metric(model, x, seed=-1)


@pytest.mark.parametrize("metric", [eq_t, eq_t_frac, eq_r])
def test_psnr_metrics_take_the_output_lee_takes(metric):
    model, x = FlatLinear(), image()
    name = metric.__name__
    soft = metric(model, x, num_samples=3)
    assert soft.equals(metric(model, x, num_samples=3, output="softmax"))
    logits = metric(model, x, num_samples=3, output="logits")
    assert (logits[f"{name}_mse"] > soft[f"{name}_mse"]).all()  # logits x 20 move more
    with pytest.raises(ValueError, match="unknown output"):
        metric(model, x, output="probs")
