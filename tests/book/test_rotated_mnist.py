"""Rotated MNIST (the rebuild), the MAE pieces, and the rotated-MNIST chapter."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lielib.book.data import load_idx
from lielib.book.results import read_table
from lielib.book.rotated_mnist import measure
from lielib.book.rotated_mnist.__main__ import _parser, main
from lielib.book.rotated_mnist.config import ExperimentConfig, parse_variant, preset
from lielib.book.rotated_mnist.data import (
    ROTATED_MNIST_SIZES,
    load_pretraining_digits,
    load_rotated_mnist,
    rotate_digits,
    split_sources,
)
from lielib.book.rotated_mnist.mae import (
    MAE,
    mae_loss,
    patchify,
    reconstruct,
    unpatchify,
    zero_reference,
)
from lielib.book.rotated_mnist.models import build_model, param_groups, small_cnn, small_vit
from lielib.book.rotated_mnist.run import collect, measure_variant
from lielib.book.rotated_mnist.train import pretrain, train_variant
from lielib.book.training import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pool() -> tuple[torch.Tensor, torch.Tensor]:
    """All 70,000 MNIST digits, train then test, as the rebuild indexes them."""
    parts = [load_idx("mnist", s) for s in ("train", "test")]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


@pytest.fixture(scope="module")
def train_split() -> object:
    return load_rotated_mnist("train")


# ----------------------------------------------------------------------------- the dataset


def test_split_sources_partition_the_pool():
    parts = split_sources(seed=0)
    assert {k: len(v) for k, v in parts.items()} == {
        "train": 12_000,
        "test": 50_000,
        "heldout": 8_000,
    }
    sets = {k: set(v.tolist()) for k, v in parts.items()}
    assert not sets["train"] & sets["test"]
    assert not sets["heldout"] & sets["test"]
    assert not sets["heldout"] & sets["train"]
    assert sets["train"] | sets["test"] | sets["heldout"] == set(range(70_000))


def test_split_sources_are_seeded():
    a, b, c = split_sources(0), split_sources(0), split_sources(1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["test"], c["test"])


def test_full_split_sizes_and_labels(pool, train_split):
    _images, labels = pool
    assert len(train_split) == ROTATED_MNIST_SIZES["train"] == 12_000
    assert train_split.images.shape == (12_000, 1, 28, 28)
    assert train_split.images.dtype == torch.float32
    assert 0.0 <= float(train_split.images.min()) and float(train_split.images.max()) <= 1.0
    assert torch.equal(train_split.labels, labels[train_split.source])
    test = load_rotated_mnist("test")
    assert len(test) == ROTATED_MNIST_SIZES["test"] == 50_000
    assert test.images.shape == (50_000, 1, 28, 28)
    assert torch.equal(test.labels, labels[test.source])
    # every digit class is well represented in both splits
    assert torch.bincount(test.labels, minlength=10).min() > 4_000


def test_angles_are_uniform_on_the_circle(train_split):
    """Kolmogorov-Smirnov against U[0, 2 pi) and the quartiles of all 12,000 angles."""
    a = np.sort(train_split.angles.numpy()) / (2 * math.pi)
    n = len(a)
    assert a.min() >= 0.0 and a.max() < 1.0
    ecdf_hi, ecdf_lo = np.arange(1, n + 1) / n, np.arange(n) / n
    d = max(np.max(ecdf_hi - a), np.max(a - ecdf_lo))
    assert d < 1.63 / math.sqrt(n)  # KS critical value at the 1% level
    np.testing.assert_allclose(np.quantile(a, [0.25, 0.5, 0.75]), [0.25, 0.5, 0.75], atol=0.02)
    assert abs(a.mean() - 0.5) < 0.01


def test_images_are_their_source_digits_rotated(pool, train_split):
    images, _ = pool
    k = slice(0, 16)
    expected = rotate_digits(images[train_split.source[k]], train_split.angles[k])
    torch.testing.assert_close(train_split.images[k], expected)
    # the angle is really applied: most digits differ from their upright source
    upright = images[train_split.source[k]].float().unsqueeze(1) / 255
    assert (train_split.images[k] - upright).abs().flatten(1).mean(1).gt(0.02).float().mean() > 0.8


def test_rotation_is_counter_clockwise_about_the_centre():
    x = torch.zeros(1, 1, 28, 28)
    x[0, 0, 13:15, 20:24] = 1.0  # a bar to the right of the centre (13.5, 13.5)
    y = rotate_digits(x, torch.tensor([math.pi / 2]))
    rows, cols = (y[0, 0] > 0.5).nonzero(as_tuple=True)
    assert rows.float().mean() < 10 and abs(cols.float().mean() - 13.5) < 1  # now above
    full_turn = rotate_digits(x, torch.tensor([2 * math.pi]))
    torch.testing.assert_close(full_turn, x, atol=1e-4, rtol=0)


def test_subsets_are_prefixes_of_the_split(train_split):
    small = load_rotated_mnist("train", size=100)
    torch.testing.assert_close(small.images, train_split.images[:100])
    assert torch.equal(small.angles, train_split.angles[:100])


def test_pretraining_digits_are_disjoint_from_the_test_set(pool):
    images, _ = pool
    digits, _labels = load_pretraining_digits()
    held = split_sources(0)["heldout"]
    assert digits.shape == (8_000, 1, 28, 28)
    torch.testing.assert_close(digits, images[held].unsqueeze(1).float() / 255)
    # disjoint by index (construction) and by content: no pretraining digit's pixels equal
    # those of any digit the rotated test set was made from
    test_src = split_sources(0)["test"]

    def digest(batch: torch.Tensor) -> set[bytes]:
        return {hashlib.sha1(img.numpy().tobytes()).digest() for img in batch}

    assert not digest(images[held]) & digest(images[test_src])


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: load_rotated_mnist("valid"), "unknown split"),
        (lambda: load_rotated_mnist("train", size=0), "size must be"),
        (lambda: load_rotated_mnist("train", size=12_001), "size must be"),
        (lambda: load_pretraining_digits(size=9_000), "size must be"),
        (lambda: rotate_digits(torch.zeros(2, 28, 28), torch.zeros(3)), "2 images but 3 angles"),
    ],
    ids=["bad-split", "size-zero", "size-too-big", "pretrain-too-big", "angle-count"],
)
def test_bad_input_raises_clearly(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ----------------------------------------------------------------------------- models and MAE


def test_patchify_matches_unfold_order_and_unpatchify_inverts_it():
    imgs = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    expected = torch.nn.functional.unfold(imgs, 4, stride=4).transpose(1, 2)
    torch.testing.assert_close(patchify(imgs, 4), expected)
    torch.testing.assert_close(unpatchify(patchify(imgs, 4), 4), imgs)


def test_mae_loss_uses_normalised_pixels_of_masked_patches_only():
    gen = torch.Generator().manual_seed(0)
    imgs = torch.rand(2, 1, 28, 28, generator=gen)
    target = patchify(imgs, 4)
    target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
    mask = (torch.rand(2, 49, generator=gen) < 0.75).float()
    assert mae_loss(target, imgs, mask, 4) < 1e-10
    wrong_visible = target + (1 - mask)[..., None] * 5.0  # errors only on visible patches
    assert mae_loss(wrong_visible, imgs, mask, 4) < 1e-10
    wrong_masked = target + mask[..., None] * 1.0
    torch.testing.assert_close(mae_loss(wrong_masked, imgs, mask, 4), torch.tensor(1.0))
    # the zero-prediction reference is the loss of predicting zero on every patch
    ones = torch.ones(2, 49)
    assert zero_reference(imgs, 4) == pytest.approx(float(mae_loss(torch.zeros_like(target), imgs, ones, 4)))


def test_mae_masks_three_quarters_and_reconstructs_visible_patches_exactly():
    mae = MAE(build_model("vit", seed=0, embed_dim=16, depth=1, num_heads=2), decoder_dim=16)
    digits, _ = load_pretraining_digits(size=3)
    loss, pred, mask = mae(digits, generator=torch.Generator().manual_seed(0))
    assert pred.shape == (3, 49, 16) and mask.shape == (3, 49)
    assert torch.equal(mask.sum(1), torch.full((3,), 37.0))  # 49 - round(0.25 * 49)
    assert torch.isfinite(loss)
    out = reconstruct(mae, digits, torch.Generator().manual_seed(0))
    visible = ~unpatchify(out["mask"][..., None].expand(-1, -1, 16), 4)[:, 0].bool()
    torch.testing.assert_close(out["reconstruction"][visible], digits[:, 0][visible])
    assert out["masked"][~visible].isnan().all() and not out["masked"][visible].isnan().any()


def test_cnn_has_six_convolutions_and_both_models_classify():
    x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    cnn = small_cnn(width=4)
    convs = [m.out_channels for m in cnn.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs == [4, 4, 8, 8, 16, 16]
    for model in (small_vit(embed_dim=16, depth=1, num_heads=2), cnn):
        assert model(x).shape == (2, 10)


def test_build_model_is_seeded_and_leaves_the_global_rng_alone():
    before = torch.random.get_rng_state()
    a, b = build_model("cnn", seed=3, cnn_width=4), build_model("cnn", seed=3, cnn_width=4)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    c = build_model("cnn", seed=4, cnn_width=4)
    assert not torch.equal(a[0].weight, c[0].weight)


def test_param_groups_decay_the_learning_rate_layer_by_layer():
    vit = small_vit(embed_dim=16, depth=3, num_heads=2)
    groups = param_groups(vit, weight_decay=0.05, layer_decay=0.5)
    scale = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    decay = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    assert len(scale) == sum(1 for _ in vit.parameters())
    assert scale[id(vit.head.weight)] == 1.0 and scale[id(vit.blocks[2].attn.qkv.weight)] == 0.5
    assert scale[id(vit.blocks[0].attn.qkv.weight)] == 0.125 and scale[id(vit.pos_embed)] == 0.0625
    assert decay[id(vit.pos_embed)] == 0.0 and decay[id(vit.head.bias)] == 0.0
    assert decay[id(vit.head.weight)] == 0.05
    assert {g["lr_scale"] for g in param_groups(small_cnn(width=4), weight_decay=0.0)} == {1.0}


# ----------------------------------------------------------------------------- measurements


def _fake_per_image(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for variant in ("mae", "scratch", "mae+rot"):
        for epoch in (0, 1, 2):
            for image in range(40):
                rot = rng.lognormal(-3 - (epoch if variant == "mae+rot" else 0), 0.3)
                for action, value in (("rotate", rot), ("translate_x", 0.02), ("translate_y", 0.04)):
                    rows.append({"variant": variant, "epoch": epoch, "image": image,
                                 "action": action, "lee": value})
    return pd.DataFrame(rows)


def test_summary_intervals_cover_the_mean_and_translate_averages_both_shifts():
    per = _fake_per_image()
    summary = measure.summarise(per, n_resamples=200)
    assert set(summary["action"]) == {"rotate", "translate_x", "translate_y", "translate"}
    assert (summary["n"] == 40).all()
    assert ((summary["lee_low"] <= summary["lee"]) & (summary["lee"] <= summary["lee_high"])).all()
    tr = summary[summary["action"] == "translate"]
    np.testing.assert_allclose(tr["lee"], 0.03)
    rot = summary[(summary["action"] == "rotate") & (summary["variant"] == "mae")]
    assert (rot["lee_high"] > rot["lee_low"]).all()


def test_translate_averages_both_shifts_per_image_when_several_metrics_share_the_table():
    per = _fake_per_image()
    rng = np.random.default_rng(1)
    both = per.assign(rho=rng.uniform(0.5, 1.5, len(per)))  # differs between the two shifts
    alone = measure.summarise(per, "lee", n_resamples=200)
    shared = measure.summarise(both, "lee", n_resamples=200)
    pd.testing.assert_frame_equal(shared, alone)
    assert (shared["n"] == 40).all()
    rho = measure.summarise(both, "rho", n_resamples=200).set_index(["variant", "epoch", "action"])
    mean_xy = both[both["action"] != "rotate"].groupby(["variant", "epoch", "image"])["rho"].mean()
    expected = mean_xy.groupby(["variant", "epoch"]).mean()
    got = rho.xs("translate", level="action")["rho"].reindex(expected.index)
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_the_sensitivity_ratio_is_a_registered_metric_with_one_column_per_action():
    from lielib import sensitivity_ratio

    assert measure.METRICS["rho"] is measure.measure_rho
    torch.manual_seed(0)
    model = small_cnn(width=4).eval()
    x = load_rotated_mnist("test", size=3).images
    wide = measure.measure_rho(model, x)
    assert list(wide.columns) == list(measure.ACTIONS) and wide.index.name == "image"
    tidy = sensitivity_ratio(model, x, list(measure.ACTIONS), seed=0, stencil="paper")
    for action in measure.ACTIONS:
        np.testing.assert_allclose(wide[action].to_numpy(),
                                   tidy[tidy["action"] == action]["rho"].to_numpy())
    pd.testing.assert_frame_equal(measure.measure_rho(model, x), wide)  # same references each time
    assert not wide.equals(measure.measure_rho(model, x, seed=1))


def test_ratios_and_paired_contrasts_find_a_planted_fall():
    per = _fake_per_image()
    ratio = measure.ratios(per, n_resamples=200).set_index(["variant", "epoch"])
    assert ratio.loc[("mae+rot", 2), "log_ratio"] < ratio.loc[("mae+rot", 0), "log_ratio"] - 1.5
    con = measure.contrasts(per, n_resamples=200)
    training = con[(con["question"] == "training") & (con["a"] == "mae+rot@2") & (con["b"] == "mae+rot@1")]
    assert len(training) == 1 and training["difference"].iloc[0] == pytest.approx(-1, abs=0.2)
    assert training["high"].iloc[0] < 0
    aug = con[con["question"] == "augmentation"]
    assert aug["a"].tolist() == ["mae+rot@2"] and aug["b"].tolist() == ["mae@2"]
    assert (aug["high"] < 0).all()
    flat = con[(con["question"] == "training") & (con["a"] == "mae@2") & (con["b"] == "mae@1")]
    assert flat["low"].iloc[0] < 0 < flat["high"].iloc[0]  # nothing planted: interval spans 0
    assert set(con["question"]) == {"training", "pretraining", "augmentation"}


# ----------------------------------------------------------------------------- the run


def test_presets_and_variants():
    assert preset("full").train_size == 12_000 and preset("full").epochs >= 30
    assert preset("full").lee_size >= 256 and preset("full").final_eval_size == 50_000
    assert {parse_variant(v)[1] for v in preset("full").variants} == {False, True}
    assert preset("paper").epochs == 100 and preset("paper").device == "cuda"
    assert preset("cpu", epochs=3).epochs == 3
    assert preset("full").fingerprint() != preset("full", lr=5e-4).fingerprint()
    assert preset("full").fingerprint() == preset("full", lee_size=512, device="cuda").fingerprint()
    with pytest.raises(ValueError, match="unknown variant"):
        preset("smoke", variants=["resnet"])


def test_config_round_trips_through_the_command_line():
    cfg = ExperimentConfig(variants=("mae+rot", "cnn"), epochs=3, lr=5e-4)
    args = _parser().parse_args(cfg.cli_args())
    assert tuple(args.variants) == cfg.variants and args.epochs == 3 and args.lr == 5e-4


def test_cli_rejects_unknown_variants():
    with pytest.raises(SystemExit, match="unknown variant"):
        main(["--preset", "smoke", "--variants", "resnet"])


class _Stop(Exception):
    pass


def _stop_after(text: str):
    def log(msg: str) -> None:
        if text in msg:
            raise _Stop(msg)
    return log


@pytest.mark.parametrize("variant", ["mae+rot", "cnn"], ids=["mae-rotation-augmented", "cnn"])
def test_a_killed_run_resumes_at_the_last_epoch_and_ends_as_if_uninterrupted(tmp_path, variant):
    cfg = preset("smoke", variants=(variant,), epochs=3, mae_epochs=3)
    pretrain(cfg, tmp_path / "a", log=print)
    ref = train_variant(cfg, variant, tmp_path / "a", log=print)
    with pytest.raises(_Stop):
        pretrain(cfg, tmp_path / "b", log=_stop_after("epoch 2/3"))
    assert load_checkpoint(tmp_path / "b" / "pretrain" / "state.pt")["epoch"] == 2
    pretrain(cfg, tmp_path / "b", log=print)
    with pytest.raises(_Stop):
        train_variant(cfg, variant, tmp_path / "b", log=_stop_after("epoch 2/3"))
    assert not (tmp_path / "b" / variant / "epoch_003.pt").exists()
    messages = []
    got = train_variant(cfg, variant, tmp_path / "b", log=messages.append)
    assert messages[0] == f"{variant}: resuming after epoch 2"
    assert [r["epoch"] for r in got["rows"]] == [0, 1, 2, 3]
    for key in ("model",):
        for name, value in ref[key].items():
            torch.testing.assert_close(got[key][name], value, msg=name)
    assert got["final"] == ref["final"]
    # the epoch-0 weights are the start of training with BatchNorm statistics re-estimated
    zero = load_checkpoint(tmp_path / "b" / variant / "epoch_000.pt")["model"]
    means = [v for k, v in zero.items() if k.endswith("running_mean")]
    assert variant.startswith("mae") or (means and all(m.abs().sum() > 0 for m in means))


def test_a_new_metric_is_measured_from_stored_epochs_without_retraining(tmp_path, monkeypatch):
    from lielib import lee

    cfg = preset("smoke", variants=("cnn",))
    folder, out = tmp_path / "cache", tmp_path / "out"
    train_variant(cfg, "cnn", folder, log=print)
    measure_variant(cfg, "cnn", folder, log=print)
    stamps = {p: p.stat().st_mtime_ns for p in (folder / "cnn" / "lee").glob("*.csv")}
    assert len(stamps) == cfg.epochs + 1
    monkeypatch.setitem(measure.METRICS, "logit_lee",
                        lambda model, x: lee(model, x, list(measure.ACTIONS), output="logits"))
    messages = []
    measure_variant(cfg, "cnn", folder, log=messages.append)
    assert len(messages) == cfg.epochs + 1 and all("logit_lee" in m for m in messages)
    assert {p: p.stat().st_mtime_ns for p in (folder / "cnn" / "lee").glob("*.csv")} == stamps
    paths = collect(cfg, folder, out, command="test")
    per_image, _ = read_table(paths["per_image"])
    assert {"lee", "logit_lee"} <= set(per_image.columns) and per_image.notna().all().all()
    summary, _ = read_table(paths["summary"])
    assert {"lee_low", "logit_lee_high"} <= set(summary.columns)
    assert set(read_table(paths["ratios"])[0]["metric"]) == {"lee", "rho", "logit_lee"}


def test_cli_smoke_run_writes_every_table_with_metadata(tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    paths = main(["--preset", "smoke", "--out", str(out), "--cache", str(cache)])
    assert set(paths) == {"pretraining", "mae_examples", "epochs", "final", "per_image", "summary",
                          "ratios", "contrasts"}
    epochs, meta = read_table(paths["epochs"])
    assert set(epochs["variant"]) == {"mae", "cnn+rot"}
    assert epochs.groupby("variant")["epoch"].apply(list).tolist() == [[0, 1, 2]] * 2
    assert meta["command"].startswith("python -m lielib.book.rotated_mnist --preset smoke")
    assert meta["finished_variants"] == ["mae", "cnn+rot"] and meta["seed"] == 0
    final, _ = read_table(paths["final"])
    assert (final["n_test"] == 128).all()
    pre, _ = read_table(paths["pretraining"])
    assert {"loss", "zero_reference", "val_loss", "loss_over_reference"} <= set(pre.columns)
    summary, _ = read_table(paths["summary"])
    assert (summary["n"] == 8).all() and len(summary) == 2 * 3 * 4
    with np.load(paths["mae_examples"]) as z:
        assert z["original"].shape == z["reconstruction"].shape == z["masked"].shape == (8, 28, 28)
    # rerunning resumes: nothing is retrained and the tables are rewritten the same
    again = main(["--preset", "smoke", "--out", str(out), "--cache", str(cache)])
    pd.testing.assert_frame_equal(read_table(again["epochs"])[0].drop(columns="seconds"),
                                  epochs.drop(columns="seconds"))


# ----------------------------------------------------------------------------- the upright control


def test_parse_variant_knows_the_upright_suffix_and_lists_it_when_refusing():
    assert parse_variant("mae+up") == ("mae", False, True)
    assert parse_variant("cnn+rot") == ("cnn", True, False)
    assert parse_variant("scratch") == ("scratch", False, False)
    for bad in ("mae+upright", "mae+rot+up", "up"):
        with pytest.raises(ValueError, match=r"'\+up'"):
            parse_variant(bad)


def test_the_upright_variant_trains_on_the_upright_sources_of_the_rotated_training_digits(pool):
    from lielib.book.rotated_mnist.train import training_digits

    images, labels = pool
    cfg = preset("smoke", variants=("mae+up",))
    rotated = load_rotated_mnist("train", seed=cfg.seed, size=cfg.train_size)
    x_up, y_up = training_digits(cfg, "mae+up")
    x_rot, y_rot = training_digits(cfg, "mae")
    assert x_up.shape == x_rot.shape == (cfg.train_size, 1, 28, 28)
    torch.testing.assert_close(x_up, images[rotated.source].unsqueeze(1).float() / 255, rtol=0, atol=0)
    assert torch.equal(y_up, labels[rotated.source]) and torch.equal(y_up, y_rot)
    torch.testing.assert_close(x_rot, rotated.images, rtol=0, atol=0)
    # the same digits: rotating each upright digit by its angle gives its rotated twin
    torch.testing.assert_close(rotate_digits(x_up, rotated.angles), x_rot)
    assert (x_up - x_rot).abs().flatten(1).mean(1).gt(0.02).float().mean() > 0.8


def test_the_fingerprint_is_that_of_the_variants_without_the_control():
    with_control = preset("full", seed=1, variants=["mae+up"])
    assert with_control.fingerprint() == preset("full", seed=1).fingerprint() == "02957e2ebb"
    assert preset("full").fingerprint() == "95ccd74dc1"


def test_cli_smoke_run_of_the_upright_control(tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    paths = main(["--preset", "smoke", "--variants", "mae+up", "--out", str(out), "--cache", str(cache)])
    epochs, meta = read_table(paths["epochs"])
    assert set(epochs["variant"]) == {"mae+up"} and epochs["upright_training"].all()
    assert not epochs["rotation_augmentation"].any() and meta["finished_variants"] == ["mae+up"]
    assert meta["command"].split("--variants ")[1].startswith("mae+up ")
    summary, _ = read_table(paths["summary"])
    assert (summary["n"] == 8).all() and set(summary["epoch"]) == {0, 1, 2}
    contrasts, _ = read_table(paths["contrasts"])
    assert set(contrasts["a"]) == {"mae+up@2"}  # no upright row without the rotated twin
    # measured on the same rotated test digits as every other variant
    lee_epoch0 = pd.read_csv(cache / "mae+up" / "lee" / "epoch_000.csv", index_col="image")
    plain = preset("smoke", variants=("mae",))
    from lielib.book.rotated_mnist.train import classifier

    model = classifier(plain, "mae", cache)
    model.load_state_dict(load_checkpoint(cache / "mae+up" / "epoch_000.pt")["model"])
    x = load_rotated_mnist("test", seed=0, size=plain.lee_size).images
    expected = measure.measure_lee(model, x)
    np.testing.assert_allclose(lee_epoch0.to_numpy(), expected.to_numpy(), rtol=1e-6)
