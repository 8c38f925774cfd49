"""The calibration controls, their known invariances, the ranking logic and the command line."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from lielib import lee
from lielib.book.calibration import measure
from lielib.book.calibration.__main__ import main
from lielib.book.calibration.controls import GroupAveraged, PixelLinear, PixelMean, rotations
from lielib.book.calibration.run import CalibrationSettings, MissingNetworkError, load_network
from lielib.book.results import read_table
from lielib.book.rotated_mnist.config import preset
from lielib.book.rotated_mnist.data import load_rotated_mnist
from lielib.book.rotated_mnist.models import build_model
from lielib.book.rotated_mnist.train import train_variant
from lielib.book.training import recalibrate_batchnorm


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    return load_rotated_mnist("test", size=12).images


@pytest.fixture(scope="module")
def cnn() -> torch.nn.Module:
    """A random CNN of the rotated-MNIST architecture, BatchNorm statistics from training digits."""
    net = build_model("cnn", seed=0, cnn_width=8)
    recalibrate_batchnorm(net, load_rotated_mnist("train", size=256).images)
    return net.eval()


def test_rotations_lists_the_group_with_the_identity_first(digits):
    copies = rotations(digits, 8)
    assert copies.shape == (8, *digits.shape)
    torch.testing.assert_close(copies[0], digits, rtol=0, atol=0)
    torch.testing.assert_close(copies[2], torch.rot90(digits, 2, dims=(-2, -1)), rtol=0, atol=0)
    with pytest.raises(ValueError, match="multiple of 4"):
        rotations(digits, 6)


@pytest.mark.parametrize("order", [4, 8, 16], ids=["C4", "C8", "C16"])
def test_group_averages_are_invariant_to_quarter_turns(cnn, digits, order):
    model = GroupAveraged(cnn, order).eval()
    with torch.no_grad():
        ref = model(digits)
        for k in (1, 2, 3):
            turned = model(torch.rot90(digits, k, dims=(-2, -1)))
            torch.testing.assert_close(turned, ref, rtol=0, atol=1e-5)
        plain_change = (cnn(torch.rot90(digits, 1, dims=(-2, -1))) - cnn(digits)).abs().max()
    assert plain_change > 1e-2  # the network itself is not invariant: the test can fail


def test_c4_averages_the_logits_of_the_four_quarter_turns(cnn, digits):
    with torch.no_grad():
        expected = torch.stack([cnn(torch.rot90(digits, k, dims=(-2, -1))) for k in range(4)]).mean(0)
        torch.testing.assert_close(GroupAveraged(cnn, 4)(digits), expected, rtol=1e-6, atol=1e-6)


def test_finer_groups_are_more_invariant_to_continuous_rotation(cnn, digits):
    """On a random network: rotation LEE (logits, central stencil) falls C16 < C4 < plain."""
    values = {name: float(lee(m, digits, "rotate", output="logits", stencil="central").mean().iloc[0])
              for name, m in [("plain", cnn), ("C4", GroupAveraged(cnn, 4)), ("C16", GroupAveraged(cnn, 16))]}
    assert values["C16"] < values["C4"] < values["plain"]
    # approximately invariant: a small finite rotation moves C16 much less than the network
    angle = torch.full((len(digits),), math.radians(11.25))
    from lielib import get_action

    turned = get_action("rotate").act(digits, angle, stencil="central")
    with torch.no_grad():
        c16 = GroupAveraged(cnn, 16)
        assert (c16(turned) - c16(digits)).abs().mean() < 0.5 * (cnn(turned) - cnn(digits)).abs().mean()


def test_readouts_are_invariant_and_not(digits):
    mean, linear = PixelMean(digits), PixelLinear(digits)
    assert mean(digits).shape == linear(digits).shape == (len(digits), 10)
    rolled = torch.roll(digits, 3, dims=-1)
    with torch.no_grad():
        torch.testing.assert_close(mean(rolled), mean(digits), rtol=0, atol=1e-5)
        torch.testing.assert_close(mean(torch.rot90(digits, 1, dims=(-2, -1))), mean(digits), rtol=0, atol=1e-5)
        assert (linear(rolled) - linear(digits)).abs().mean() > 0.1
        assert (linear(digits) - linear.b).std() == pytest.approx(1.0, rel=1e-4)
    central = lee(mean, digits, ["rotate", "translate_x"], output="logits", stencil="central").mean()
    assert (central < 0.02 * lee(linear, digits, ["rotate", "translate_x"], output="logits",
                                 stencil="central").mean()).all()


def test_measure_model_has_every_quantity_for_every_action(cnn, digits):
    frame = measure.measure_model(cnn, digits[:4], references=2)
    assert list(frame.columns) == ["image", "action", *measure.QUANTITIES]
    assert frame.groupby("action").size().to_dict() == {a: 4 for a in (*measure.ACTIONS, "translate")}
    rot = frame[frame["action"] == "rotate"]
    expected = lee(cnn, digits[:4], "rotate", output="logits", stencil="paper")["rotate"]
    np.testing.assert_allclose(rot["lee_logits_paper"], expected, rtol=1e-5)
    assert rot["eq_r_mse"].notna().all() and rot["eq_t_mse"].isna().all()
    tr = frame[frame["action"] == "translate"]
    assert tr[["eq_t_mse", "eq_t_frac_mse", "shift_inconsistency"]].notna().all().all()
    xy = frame[frame["action"].isin(["translate_x", "translate_y"])].groupby("image")["lee_softmax_central"].mean()
    np.testing.assert_allclose(tr.set_index("image")["lee_softmax_central"], xy)


# ----------------------------------------------------------------------------- ranking logic


def _synthetic(plain=1.0, c4=0.5, c8=0.3, c16=0.2, invariant=0.001, n=40, noise=0.05, seed=0):
    """Per-image values of one quantity with planted means (everything else equal)."""
    rng = np.random.default_rng(seed)
    rows = []
    means = {("cnn", "plain"): plain, ("cnn", "C4"): c4, ("cnn", "C8"): c8, ("cnn", "C16"): c16,
             ("readouts", "pixel-mean"): invariant, ("readouts", "pixel-linear"): 1.0}
    shared = rng.normal(0, noise, n)  # an image effect all controls share (paired design)
    for (network, control), m in means.items():
        values = np.abs(m * (1 + shared + rng.normal(0, noise, n)))
        for i, v in enumerate(values):
            rows.append({"network": network, "control": control, "image": i, "action": "rotate",
                         **{q: v for q in measure.QUANTITIES}})
    return pd.DataFrame(rows)


def test_a_metric_that_ranks_the_controls_as_theory_says_is_calibrated():
    con = measure.paired_contrasts(_synthetic(), n_resamples=500)
    assert set(con["verdict"]) == {"as expected"}
    v = measure.verdicts(con)
    assert len(v) == len(measure.QUANTITIES) and v["calibrated"].all()
    assert v["invariant_ratio"].iloc[0] == pytest.approx(0.001, rel=0.1)


@pytest.mark.parametrize(
    "planted, reason",
    [({"c4": 1.5}, "reversed"), ({"c4": 1.0}, "unresolved"), ({"c16": 0.6}, "reversed"),
     ({"invariant": 0.2}, "not invariant")],
    ids=["c4-above-plain", "c4-tied-with-plain", "c16-above-c8", "invariant-not-at-zero"])
def test_a_metric_that_misranks_the_controls_is_not(planted, reason):
    con = measure.paired_contrasts(_synthetic(**planted), n_resamples=500)
    assert reason in set(con["verdict"])
    v = measure.verdicts(con)
    assert not v["calibrated"].any()
    if reason == "not invariant":
        assert v["ranks_controls"].all() and not v["invariant_at_zero"].any()
    else:
        assert not v["ranks_controls"].any() and v["invariant_at_zero"].all()


def test_equal_finer_groups_are_a_tie_not_a_failure():
    con = measure.paired_contrasts(_synthetic(c8=0.3, c16=0.3, noise=0.0001), n_resamples=500)
    tie = con[(con["a"] == "C16") & (con["b"] == "C8")]
    assert (tie["verdict"] == "as expected (tie)").all()
    assert measure.verdicts(con)["ranks_controls"].all()


# ----------------------------------------------------------------------------- the run


def test_settings_refuse_what_they_cannot_measure():
    with pytest.raises(ValueError, match="unknown variant"):
        CalibrationSettings(networks=("resnet",), averaged=())
    with pytest.raises(ValueError, match="not among"):
        CalibrationSettings(networks=("cnn",), averaged=("cnn+rot",))
    with pytest.raises(ValueError, match="unknown groups"):
        CalibrationSettings(groups=("C6",))
    assert CalibrationSettings(seed=1).key() != CalibrationSettings(seed=2).key()
    assert CalibrationSettings(networks=("cnn",), averaged=()).key() == CalibrationSettings().key()


def test_a_missing_network_is_named_with_how_to_train_it(tmp_path):
    with pytest.raises(MissingNetworkError, match="cnn\\+rot: no finished training"):
        load_network(preset("smoke"), "cnn+rot", tmp_path)


def test_cli_on_a_smoke_checkpoint_measures_what_exists_and_lists_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("LIELIB_CACHE", str(tmp_path / "cache"))
    cfg = preset("smoke")
    from lielib.book.rotated_mnist.run import default_cache

    train_variant(cfg, "cnn", default_cache(cfg), log=print)
    argv = ["--preset", "smoke", "--networks", "cnn", "scratch", "--averaged", "cnn", "--groups", "C4", "C8",
            "--n-images", "6", "--eval-size", "32", "--references", "2", "--out", str(tmp_path / "out")]
    paths = main(argv)
    assert set(paths) == {"controls", "per_image", "summary", "contrasts", "verdicts"}
    controls, meta = read_table(paths["controls"])
    assert meta["missing"] == ["scratch"] and meta["measured"] == ["cnn"]
    assert meta["command"].startswith("python -m lielib.book.calibration --preset smoke")
    assert controls["control"].tolist() == ["plain", "C4", "C8", "pixel-mean", "pixel-linear"]
    by = controls.set_index("control")["rot90_max_logit_change"]
    assert by["C4"] < 1e-5 and by["C8"] < 1e-5 and by["plain"] > 1e-3
    per_image, _ = read_table(paths["per_image"])
    assert len(per_image) == 5 * 6 * 4
    contrasts, _ = read_table(paths["contrasts"])
    assert set(zip(contrasts["a"], contrasts["b"])) == {("C4", "plain"), ("C8", "C4"),
                                                       ("pixel-mean", "pixel-linear")}
    assert set(contrasts[contrasts["action"] == "translate"]["a"]) == {"pixel-mean"}
    verdicts, _ = read_table(paths["verdicts"])
    rotation = verdicts[verdicts["action"] == "rotate"]
    assert set(rotation["quantity"]) == set(measure.QUANTITIES) - {"eq_t_mse", "eq_t_frac_mse",
                                                                     "shift_inconsistency"}
    translation = verdicts[verdicts["action"] == "translate"]
    assert set(translation["quantity"]) == set(measure.QUANTITIES) - {"eq_r_mse"}
    assert translation["ranks_controls"].isna().all()
    # resumable: a rerun reads every control from the cache and writes the same numbers
    again = main(argv)
    pd.testing.assert_frame_equal(read_table(again["per_image"])[0], per_image)
