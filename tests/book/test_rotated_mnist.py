"""Rotated MNIST (the rebuild), the MAE pieces, and the rotated-MNIST chapter."""

from __future__ import annotations

import hashlib
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lielib.book.data import load_idx
from lielib.book.results import read_table
from lielib.book.rotated_mnist.data import (
    ROTATED_MNIST_SIZES,
    load_pretraining_digits,
    load_rotated_mnist,
    rotate_digits,
    split_sources,
)
from lielib.book.rotated_mnist.mae import (
    LEE_ACTIONS,
    MAE,
    ExperimentConfig,
    finetune,
    layerwise_rotation,
    mae_loss,
    main,
    patchify,
    pretrain_mae,
    small_cnn,
    small_vit,
)

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


# ----------------------------------------------------------------------------- the MAE


def test_patchify_matches_unfold_order():
    imgs = torch.randn(2, 1, 28, 28)
    expected = torch.nn.functional.unfold(imgs, 4, stride=4).transpose(1, 2)
    torch.testing.assert_close(patchify(imgs, 4), expected)


def test_mae_loss_uses_normalised_pixels_of_masked_patches_only():
    imgs = torch.rand(2, 1, 28, 28)
    target = patchify(imgs, 4)
    target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
    mask = (torch.rand(2, 49) < 0.75).float()
    assert mae_loss(target, imgs, mask, 4) < 1e-10
    wrong_visible = target + (1 - mask)[..., None] * 5.0  # errors only on visible patches
    assert mae_loss(wrong_visible, imgs, mask, 4) < 1e-10
    wrong_masked = target + mask[..., None] * 1.0
    torch.testing.assert_close(mae_loss(wrong_masked, imgs, mask, 4), torch.tensor(1.0))


def test_mae_masks_three_quarters_of_the_patches():
    torch.manual_seed(0)
    mae = MAE(small_vit(embed_dim=16, depth=1, num_heads=2), decoder_dim=16)
    loss, pred, mask = mae(torch.rand(3, 1, 28, 28), generator=torch.Generator().manual_seed(0))
    assert pred.shape == (3, 49, 16) and mask.shape == (3, 49)
    assert torch.equal(mask.sum(1), torch.full((3,), 37.0))  # 49 - round(0.25 * 49)
    assert torch.isfinite(loss)


def test_mae_loss_falls_on_a_tiny_run():
    digits, _ = load_pretraining_digits(size=64)
    torch.manual_seed(0)
    mae = MAE(small_vit(embed_dim=32, depth=1, num_heads=2), decoder_dim=32)
    curve = pretrain_mae(mae, digits, epochs=12, batch_size=32, lr=3e-3, seed=0)
    assert list(curve["epoch"]) == list(range(1, 13))
    assert curve["loss"].iloc[-3:].mean() < 0.85 * curve["loss"].iloc[0]


def test_vit_and_cnn_classify_digits_and_are_differentiable():
    torch.manual_seed(0)
    x = torch.rand(2, 1, 28, 28)
    for model in (small_vit(embed_dim=16, depth=1, num_heads=2), small_cnn(width=4)):
        assert model(x).shape == (2, 10)
    from lielib import lee

    frame = lee(small_vit(embed_dim=16, depth=1, num_heads=2), x, list(LEE_ACTIONS))
    assert list(frame.columns) == list(LEE_ACTIONS)
    assert np.isfinite(frame.to_numpy()).all() and (frame.to_numpy() > 0).all()


def test_finetune_records_epoch_zero_and_each_epoch():
    data = load_rotated_mnist("train", size=96)
    torch.manual_seed(0)
    model = small_cnn(width=4)
    frame = finetune(
        model,
        (data.images[:64], data.labels[:64]),
        (data.images[64:], data.labels[64:]),
        data.images[64:68],
        epochs=2,
        batch_size=32,
        augment=True,
    )
    assert list(frame["epoch"]) == [0, 1, 2]
    assert {"accuracy", "lee_rotate", "lee_translate", "train_loss"} <= set(frame.columns)
    assert frame["train_loss"].isna().tolist() == [True, False, False]
    assert frame[["lee_rotate", "lee_translate"]].gt(0).all().all()
    np.testing.assert_allclose(
        frame["lee_translate"], 0.5 * (frame["lee_translate_x"] + frame["lee_translate_y"])
    )


def test_layerwise_is_reported_unavailable_without_lielib_layers(monkeypatch):
    monkeypatch.setitem(sys.modules, "lielib.decompose", None)
    frame, status = layerwise_rotation(small_cnn(width=4), torch.rand(1, 1, 28, 28))
    assert frame is None and status.startswith("unavailable")


def test_layerwise_rotation_averages_each_module_over_images():
    pytest.importorskip("lielib.decompose")
    torch.manual_seed(0)
    model = small_cnn(width=4)
    frame, status = layerwise_rotation(model, torch.rand(2, 1, 28, 28))
    assert status == "computed"
    assert {"module", "layer_kind", "order", "value"} <= set(frame.columns)
    assert frame["module"].is_unique and frame["order"].is_monotonic_increasing
    assert (frame["value"] >= 0).all() and (frame["value"] > 0).any()


def test_cli_writes_tidy_results_with_metadata(tmp_path):
    args = [
        "--variants",
        "cnn",
        "--train-size",
        "64",
        "--eval-size",
        "32",
        "--lee-size",
        "4",
        "--layerwise-size",
        "1",
        "--epochs",
        "1",
        "--cnn-width",
        "4",
    ]
    paths = main([*args, "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache")])
    frame, meta = read_table(paths["epochs"])
    assert list(frame.columns[:5]) == [
        "variant",
        "epoch",
        "accuracy",
        "lee_rotate",
        "lee_translate",
    ]
    assert frame["variant"].tolist() == ["cnn", "cnn"] and frame["epoch"].tolist() == [0, 1]
    assert meta["seed"] == 0 and meta["epochs"] == 1 and meta["sizes"]["train"] == 64
    assert (
        meta["command"].startswith("python -m lielib.book.rotated_mnist.mae") and "--train-size 64" in meta["command"]
    )
    assert meta["layerwise"] == "computed" or meta["layerwise"].startswith(
        ("unavailable", "failed")
    )
    assert (tmp_path / "cache" / "cnn_end.pt").exists()


def test_cli_rejects_unknown_variants():
    with pytest.raises(SystemExit, match="unknown variant"):
        main(["--variants", "resnet"])


def test_config_round_trips_through_the_command_line():
    cfg = ExperimentConfig(variants=("mae+rot", "cnn"), epochs=3, lr=5e-4)
    from lielib.book.rotated_mnist.mae import _parser

    args = _parser().parse_args(cfg.cli_args())
    assert tuple(args.variants) == cfg.variants and args.epochs == 3 and args.lr == 5e-4


# ----------------------------------------------------------------------------- the chapter


@pytest.mark.slow
def test_chapter_runs_a_one_epoch_finetune_through_papermill(tmp_path):
    jupytext = pytest.importorskip("jupytext")
    papermill = pytest.importorskip("papermill")
    nb = jupytext.read(ROOT / "chapters" / "rotated_mnist.py")
    out_dir = tmp_path / "results"
    params = {
        "recompute": True,
        "results_dir": str(out_dir),
        "cache_dir": str(tmp_path / "cache"),
        "variants": ["mae", "cnn"],
        "train_size": 64,
        "eval_size": 32,
        "lee_size": 4,
        "layerwise_size": 1,
        "pretrain_size": 64,
        "mae_epochs": 1,
        "epochs": 1,
        "embed_dim": 16,
        "depth": 1,
        "num_heads": 2,
        "decoder_dim": 16,
        "cnn_width": 4,
    }
    papermill.execute_notebook(
        nb,
        str(tmp_path / "out.ipynb"),
        parameters=params,
        kernel_name="python3",
        language="python",
        cwd=str(ROOT / "chapters"),
        progress_bar=False,
    )
    frame = pd.read_csv(out_dir / "epochs.csv")
    assert sorted(set(frame["variant"])) == ["cnn", "mae"]
    assert frame.groupby("variant")["epoch"].max().eq(1).all()
    assert (out_dir / "mae_pretraining.csv").exists()
