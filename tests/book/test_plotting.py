"""The book's figure style: palettes, labels and helpers of lielib.book.plotting."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.colors import to_rgb

from lielib import list_actions
from lielib.book.models import FAMILIES
from lielib.book.plotting import (
    ACTION_LABELS,
    FAMILY_PALETTE,
    LAYER_KIND_PALETTE,
    OKABE_ITO,
    TOL_EXTRA,
    action_label,
    family_color,
    family_label,
    imshow_signed,
    save_figure,
    use_theme,
)


def test_every_action_has_a_label():
    assert set(ACTION_LABELS) == set(list_actions())
    assert len(set(ACTION_LABELS.values())) == len(ACTION_LABELS)
    assert action_label("not_an_action") == "not_an_action"


@pytest.mark.parametrize("palette", [FAMILY_PALETTE, LAYER_KIND_PALETTE], ids=["family", "layer"])
def test_palettes_are_distinct_okabe_ito(palette):
    colours = list(palette.values())
    assert len(set(colours)) == len(colours), "two keys share a colour"
    assert set(colours) <= set(OKABE_ITO.values()) | set(TOL_EXTRA.values())
    assert "other" in palette


def test_layer_kinds():
    kinds = {"activation", "conv", "linear", "attention", "norm", "pool", "embed", "mlp", "block",
             "other", "residual"}
    assert kinds <= set(LAYER_KIND_PALETTE)


def test_every_family_has_a_colour_and_a_label():
    assert set(FAMILY_PALETTE) == set(FAMILIES)
    for family in FAMILIES:
        assert family_color(family) == FAMILY_PALETTE[family]
        assert family_label(family) == FAMILIES[family] and FAMILIES[family].strip()
    assert len(set(FAMILIES.values())) == len(FAMILIES)


@pytest.mark.parametrize(
    ("name", "family"),
    [
        ("vit", "vit"),
        ("vit_small_patch16_224.augreg_in21k_ft_in1k", "vit"),
        ("swin_tiny_patch4_window7_224", "vit"),
        ("deit_tiny_patch16_224", "vit"),
        ("mixer_b16_224", "mixer"),
        ("resmlp_12_224", "mixer"),
        ("convnext_tiny.in12k_ft_in1k", "cnn"),
        ("tf_efficientnet_lite0", "cnn"),
        ("resnet50", "cnn"),
        ("vgg16_bn", "cnn"),
        ("CNN", "cnn"),
        ("something_else", "other"),
    ],
)
def test_family_colour_follows_the_family_map(name, family):
    assert family_color(name) == FAMILY_PALETTE[family]
    assert family_label(name) == FAMILIES[family]


def test_imshow_signed_is_symmetric(tmp_path):
    use_theme()
    fig, ax = plt.subplots()
    values = np.array([[-1.0, 0.0], [0.5, 3.0]])
    im = imshow_signed(ax, values, vmax=2.0)
    assert im.get_clim() == (-2.0, 2.0)
    im = imshow_signed(ax, values, quantile=1.0)
    assert im.get_clim() == (-3.0, 3.0)
    with pytest.raises(ValueError, match="2-D"):
        imshow_signed(ax, np.zeros((2, 2, 2)))
    out = save_figure(fig, tmp_path / "sub" / "fig.png")
    plt.close(fig)
    assert out.is_file() and out.stat().st_size > 0
    assert not list(out.parent.glob(".*"))  # no temporary file left behind
    assert to_rgb(FAMILY_PALETTE["other"]) == to_rgb("#999999")


def test_stacked_cumulative_climbs_to_one_by_kind():
    import pandas as pd

    from lielib.book.plotting import KIND_ORDER, kind_color, stacked_cumulative

    modules = pd.DataFrame({"order": [3, 1, 2, 4], "layer_kind": ["activation", "conv", "norm", "conv"],
                            "value": [2.0, 1.0, 0.0, 1.0]})
    fig, ax = plt.subplots()
    kinds = stacked_cumulative(ax, modules)
    assert kinds == [k for k in KIND_ORDER if k in {"conv", "norm", "activation"}]
    polys = ax.collections
    assert len(polys) == len(kinds)
    assert [tuple(p.get_facecolor()[0][:3]) for p in polys] == [to_rgb(kind_color(k)) for k in kinds]
    top = max(v[1] for p in polys for v in p.get_paths()[0].vertices)
    assert top == pytest.approx(1.0)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == kinds
    with pytest.raises(ValueError, match="positive total"):
        stacked_cumulative(ax, modules.assign(value=0.0))
    plt.close(fig)
