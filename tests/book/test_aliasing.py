"""The aliasing experiments: the fully blurred twin, the budget tables, the CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

timm = pytest.importorskip("timm")

from lielib.book import blurpool
from lielib.book.aliasing.layerwise import GROUPS_EXTRA, budget_tables, group_shares
from lielib.book.aliasing.twin import load_plain, twin_ratios

X32 = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))


def _kinds(model, x):
    return [(n, type(m).__name__) for n, m in blurpool.downsampling_modules(model.eval(), x)]


def test_every_subsampling_of_the_twin_is_a_blur():
    twin = timm.create_model(blurpool.ARCH, in_chans=1, num_classes=10)
    down = _kinds(twin, X32)
    # stem (two), three blocks and three shortcuts: the eight steps of ResNet-18's 32x.
    assert len(down) == 8
    assert all(kind == "BlurPool2d" for _, kind in down), down
    names = [n for n, _ in down]
    assert {"layer2.0.downsample.0", "layer3.0.downsample.0", "layer4.0.downsample.0"} <= set(names)
    # No strided convolution or pooling is left anywhere.
    for name, m in twin.named_modules():
        if isinstance(m, torch.nn.Conv2d | torch.nn.MaxPool2d):
            stride = m.stride if isinstance(m.stride, tuple) else (m.stride, m.stride)
            assert stride == (1, 1), name


@pytest.mark.parametrize("arch, unblurred", [
    ("resnet18", {"conv1", "maxpool", "layer2.0.conv1", "layer2.0.downsample.0"}),
    ("resnetblur18", {"conv1", "layer2.0.downsample.0", "layer3.0.downsample.0"}),
])
def test_the_plain_and_timm_blur_models_subsample_without_a_blur(arch, unblurred):
    down = dict(_kinds(timm.create_model(arch, in_chans=1, num_classes=10), X32))
    assert unblurred <= {n for n, k in down.items() if k != "BlurPool2d"}


def test_twin_has_the_plain_parameters_and_output_shape():
    kw = {"in_chans": 1, "num_classes": 10}
    twin = timm.create_model(blurpool.ARCH, **kw).eval()
    plain = timm.create_model("resnet18", **kw).eval()
    count = [sum(p.numel() for p in m.parameters()) for m in (twin, plain)]
    assert count[0] == count[1]
    shapes = {n: p.shape for n, p in twin.named_parameters()}
    assert sorted(shapes.values()) == sorted(p.shape for p in plain.parameters())
    with torch.no_grad():
        assert twin(X32).shape == (2, 10)
        feats = [twin.forward_features(X32), plain.forward_features(X32)]
    assert feats[0].shape == feats[1].shape == (2, 512, 1, 1)


def test_twin_entry_is_the_zoo_recipe_with_the_blurred_arch():
    from lielib.book import zoo

    entry = blurpool.twin_entry("resnet-large")
    plain = zoo.get_entry("resnet-large")
    assert entry.arch == blurpool.ARCH and entry.name == "resnet-large-blurall"
    assert (entry.n_train, entry.augment, entry.kwargs) == (plain.n_train, plain.augment,
                                                            plain.kwargs)
    model = zoo.create(entry, seed=0)  # the zoo's head rule applies
    assert float(model.fc.weight.detach().std()) == pytest.approx(0.01, rel=0.2)
    with pytest.raises(ValueError, match="ResNet-18"):
        blurpool.twin_entry("convnext-small")
    # Another step budget is another model, in its own checkpoint folder.
    assert blurpool.twin_entry("resnet-large", zoo.STEPS).name == "resnet-large-blurall"
    assert blurpool.twin_entry("resnet-large", 2 * zoo.STEPS).name == \
        f"resnet-large-blurall-{2 * zoo.STEPS}"
    with pytest.raises(ValueError, match="positive integer"):
        blurpool.twin_entry("resnet-large", 0)


def test_missing_twin_is_a_not_available_error(tmp_path, monkeypatch):
    from lielib.book.paths import NotAvailableError

    monkeypatch.setenv("LIELIB_CACHE", str(tmp_path))
    with pytest.raises(NotAvailableError, match="--train-twin"):
        blurpool.load_twin("resnet-large", seed=3)
    with pytest.raises(NotAvailableError, match="--train-twin --twin-seed 3"):
        load_plain("resnet-large", seed=3)
    with pytest.raises(NotAvailableError, match="--twin-seed 3 --twin-steps 5"):
        blurpool.load_twin("resnet-large", seed=3, steps=5)


def test_budget_tables_add_up_under_both_stencils():
    model = timm.create_model("resnet10t", in_chans=1, num_classes=4).double().eval()
    x = X32.double()[:2]
    mods, imgs = budget_tables(model, x, {"model": "toy"}, ["translate_x", "rotate"],
                               images_per_pass=1)
    assert set(mods.stencil) == set(imgs.stencil) == {"paper", "central"}
    kinds = imgs[~imgs.group.isin(GROUPS_EXTRA)]
    # The signed budget over the layer kinds and the residual is the whole L f, per image.
    per = kinds.groupby(["action", "stencil", "image"]).agg(dot=("dot", "sum"),
                                                            total=("total", "first"))
    np.testing.assert_allclose(per["dot"], per.total, rtol=1e-8)
    al = imgs[imgs.group == "all"]
    np.testing.assert_allclose(al.value / al.total, al.squared_ratio, rtol=1e-10)
    sh = group_shares(imgs, seed=0)
    signed = sh[~sh.group.isin(GROUPS_EXTRA)]
    np.testing.assert_allclose(signed.groupby(["action", "stencil"]).signed.sum(), 1.0,
                               rtol=1e-8)
    assert (sh.share_lo <= sh.share + 1e-12).all() and (sh.share <= sh.share_hi + 1e-12).all()


def test_twin_ratios_are_paired_and_oriented_plain_over_twin():
    rng = np.random.default_rng(0)
    lee = rng.lognormal(size=30)
    per = pd.concat([
        pd.DataFrame({"image": range(30), "action": "rotate", "variant": "plain",
                      "lee": 2 * lee, "rho": lee}),
        pd.DataFrame({"image": range(30), "action": "rotate", "variant": "blurall",
                      "lee": lee, "rho": lee})])
    r = twin_ratios(per).iloc[0]
    assert r.lee_ratio == pytest.approx(2.0) and r.lee_lo == pytest.approx(2.0)
    assert r.rho_ratio == pytest.approx(1.0) and r.n == 30


def test_twin_ratios_pool_seeds_by_averaging_each_image_over_the_pairs():
    images = np.arange(20)
    rows = []
    for s, (plain, blur) in enumerate([(3.0, 1.0), (1.0, 1.0)]):
        for variant, v in (("plain", plain), ("blurall", blur)):
            rows.append(pd.DataFrame({"image": images, "action": "rotate", "variant": variant,
                                      "lee": v * (1 + images), "rho": 1.0, "twin_seed": s}))
    r = twin_ratios(pd.concat(rows)).set_index("twin_seed")
    assert list(r.index) == [0, 1, "all"]
    # Twins of two step budgets are compared separately, each with its pooled row.
    two = pd.concat([pd.concat(rows).assign(twin_steps=k) for k in (10, 20)])
    assert twin_ratios(two).groupby("twin_steps").twin_seed.apply(list).to_dict() == {
        10: [0, 1, "all"], 20: [0, 1, "all"]}
    assert r.loc[0, "lee_ratio"] == pytest.approx(3.0) and r.loc[1, "lee_ratio"] == pytest.approx(1.0)
    # Pooled: plain averages to 2x per image, the twin to 1x.
    assert r.loc["all", "lee_ratio"] == pytest.approx(2.0) and r.loc["all", "n"] == 20


@pytest.mark.parametrize("argv, needle", [
    (["--stencils", "forward"], "invalid choice"),
    (["--num-twin-images", "0"], "num_twin_images must be a positive integer"),
    (["--twin-steps", "938", "0"], "twin_steps must be positive integers"),
    (["--train-twin", "--twin-steps", "-5"], "twin_steps must be positive integers"),
])
def test_cli_rejects_bad_arguments(argv, needle, capsys):
    from lielib.book import aliasing

    with pytest.raises(SystemExit) as err:
        aliasing.main(argv)
    assert err.value.code == 2 and needle in capsys.readouterr().err
