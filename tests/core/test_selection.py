"""Which modules a decomposition visits, their kinds, and layouts read from timm models."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from toy_models import timm_model

from lielib.layout import Layout
from lielib.selection import ModelLayouts, select_modules

pytest.importorskip("timm")


def test_layouts_from_timm_metadata():
    vit = timm_model("test_vit")
    lay = ModelLayouts(vit, (1, 3, 32, 32))
    blk = torch.zeros(1, 5, 64)
    assert lay.resolve("blocks.0.mlp", blk, blk) == (Layout.tokens(1, (2, 2)),) * 2
    assert lay.resolve("head", torch.zeros(1, 64), torch.zeros(1, 7)) == (None, None)
    cnx = timm_model("test_convnext")
    lay = ModelLayouts(cnx, (1, 3, 32, 32))
    t = torch.zeros(1, 8, 8, 24)
    assert lay.resolve("stages.0.blocks.0.mlp", t, t) == (Layout("NHWC"), Layout("NHWC"))
    t = torch.zeros(1, 24, 8, 8)
    assert lay.resolve("stages.0.blocks.0.conv_dw", t, t) == (Layout("NCHW"), Layout("NCHW"))
    assert lay.family == "convnext"
    pool = lay.resolve("head.global_pool", t, torch.zeros(1, 24, 1, 1))
    assert pool == (Layout("NCHW"), None)


def test_selection():
    res = timm_model("test_resnet")
    names = [n for n, _ in select_modules(res)]
    assert "global_pool" in names and "global_pool.pool" not in names
    assert not any(isinstance(res.get_submodule(n), nn.Identity) for n in names)
    eff = timm_model("test_efficientnet")
    sel = dict(select_modules(eff))
    assert sel["bn1"] == "act" and "bn1.act" in sel
    with pytest.raises(ValueError, match="descendant"):
        select_modules(res, ["layer1", "layer1.0.conv1"])
    with pytest.raises(ValueError, match="not in the model"):
        select_modules(res, ["nope"])
