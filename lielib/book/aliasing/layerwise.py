"""Layer-wise budgets per model, action and stencil: what ``results/aliasing`` holds.

For each image the exact decomposition (:func:`lielib.decompose.layerwise_contributions`)
gives the terms ``c_m = J_{>m} L m`` and the residual ``r``, which add up to ``L f``. Two
tables keep what the chapter reads, small enough to commit:

* ``modules``: per model, action, stencil and module, the mean over images of the squared
  norm ``value = ||c_m||^2`` and of the projection ``dot = <c_m, L f>``, and the module's
  mean signed share ``signed = <c_m, L f> / ||L f||^2``;
* ``images``: per model, action, stencil, image and group of modules (every layer kind,
  ``residual``, and the overlapping groups ``downsampling``, ``nonlinear_or_down``,
  ``embed_or_norm``, ``coarse`` and ``all``), the sums of ``value`` and ``dot`` over the group, with the image's
  ``total = ||L f||^2`` and ``squared_ratio = sum_m ||c_m||^2 / ||L f||^2``.

``coarse`` holds the modules whose output is an image-like map at stride 16 or more
(:func:`output_strides`): 2 x 2 and 1 x 1 maps at 32 px, 14 x 14 and 7 x 7 at 224 px, the
stages whose grids differ most between the zoo and the paper's regime.

The squared share of a group over images is ``sum_i value_i / sum_i value_all,i`` and its
signed share ``sum_i dot_i / sum_i total_i``; the signed shares of the layer kinds and the
residual add up to 1 (:mod:`lielib.budget`).
"""

from __future__ import annotations

import pandas as pd
import torch

from lielib import layerwise_contributions
from lielib.budget import budget_frame

__all__ = ["COARSE_STRIDE", "GROUPS_EXTRA", "NONLINEAR_KINDS", "NONLINEAR_NORMS", "STENCILS",
           "budget_tables", "group_shares", "output_strides"]

STENCILS = ("paper", "central")
NONLINEAR_KINDS = ("activation", "pool", "attention", "mlp", "block")
"""Kinds that are not linear maps; so are the norms in :data:`NONLINEAR_NORMS` (BatchNorm
in eval mode is affine). With ``downsampling`` they make the ``nonlinear_or_down`` group."""
NONLINEAR_NORMS = ("LayerNorm", "LayerNorm2d", "GroupNorm", "GroupNorm1", "RmsNorm")
GROUPS_EXTRA = ("downsampling", "nonlinear_or_down", "embed_or_norm", "coarse", "all")
COARSE_STRIDE = 16
"""Modules whose output map is at this stride or more form the ``coarse`` group."""

_MODULE_KEYS = ["module", "module_type", "layer_kind", "order", "call", "downsampling"]


def output_strides(model: torch.nn.Module, x: torch.Tensor) -> dict[str, float]:
    """Per named module, the input side over its (first) output's side, for ``(N, C, H, W)`` outputs.

    Modules with other outputs (token sequences, logits) are left out.
    """
    strides: dict[str, float] = {}

    def hook(name: str):
        def fn(_m, _args, out) -> None:
            if name not in strides and isinstance(out, torch.Tensor) and out.ndim == 4:
                strides[name] = x.shape[-1] / out.shape[-1]
        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n]
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        for h in handles:
            h.remove()
    return strides


def budget_tables(model, x: torch.Tensor, info: dict, actions, stencils=STENCILS,
                  *, images_per_pass: int = 4) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ``modules`` and ``images`` tables of one model (see the module docstring)."""
    mods, imgs = [], []
    strides = output_strides(model, x)
    for stencil in stencils:
        for action in actions:
            parts = []
            for start in range(0, x.shape[0], images_per_pass):
                dec = layerwise_contributions(model, x[start:start + images_per_pass], action,
                                              stencil=stencil)
                f = budget_frame(dec)
                f["image"] += start
                f["dot"] = f.signed * f.total
                f["mode"] = dec.mode
                parts.append(f)
            f = pd.concat(parts, ignore_index=True)
            m = f.groupby(_MODULE_KEYS, as_index=False)[["value", "dot", "signed"]].mean()
            mods.append(m.assign(action=action, stencil=stencil, mode=f["mode"].iloc[0],
                                 n_images=x.shape[0], **info))
            imgs.append(_image_groups(f, strides).assign(action=action, stencil=stencil, **info))
    return pd.concat(mods, ignore_index=True), pd.concat(imgs, ignore_index=True)


def _image_groups(f: pd.DataFrame, strides: dict[str, float]) -> pd.DataFrame:
    mod = f[f.layer_kind != "residual"]
    coarse = mod.module.map(strides).fillna(0.0) >= COARSE_STRIDE
    nonlinear = mod.layer_kind.isin(NONLINEAR_KINDS) | mod.module_type.isin(NONLINEAR_NORMS)
    groups = {"downsampling": mod[mod.downsampling],
              "nonlinear_or_down": mod[mod.downsampling | nonlinear],
              "embed_or_norm": mod[mod.layer_kind.isin(("embed", "norm"))],
              "coarse": mod[coarse],
              "all": mod}
    if not coarse.any():  # no image-like map at that stride (a token model): no such group
        del groups["coarse"]
    rows = [f.groupby(["image", "layer_kind"], as_index=False)[["value", "dot"]].sum()
            .rename(columns={"layer_kind": "group"})]
    for name, g in groups.items():
        s = g.groupby("image")[["value", "dot"]].sum().reindex(f.image.unique(), fill_value=0.0)
        rows.append(s.rename_axis("image").reset_index().assign(group=name))
    out = pd.concat(rows, ignore_index=True)
    per = f.drop_duplicates("image").set_index("image")
    out["total"] = per.total.reindex(out.image).to_numpy()
    out["squared_ratio"] = per.squared_ratio.reindex(out.image).to_numpy()
    return out


def group_shares(images: pd.DataFrame, *, seed: int = 0) -> pd.DataFrame:
    """Per model, action, stencil and group: squared and signed shares with 95% intervals.

    ``share = sum_i value_i / sum_i value_all,i`` (the paper's reading) and ``signed =
    sum_i dot_i / sum_i total_i`` (the budget), each with a paired bootstrap over images.
    """
    from ..stats import ratio_ci

    rows = []
    for key, g in images.groupby(["model", "action", "stencil"]):
        allv = g[g.group == "all"].set_index("image").value
        for group, h in g.groupby("group"):
            h = h.set_index("image").reindex(allv.index)
            sq = ratio_ci(h.value.to_numpy(), allv.to_numpy(), seed=seed)
            sg = ratio_ci(h["dot"].to_numpy(), h.total.to_numpy(), seed=seed)
            rows.append({"model": key[0], "action": key[1], "stencil": key[2], "group": group,
                         "share": sq["ratio"], "share_lo": sq["lo"], "share_hi": sq["hi"],
                         "signed": sg["ratio"], "signed_lo": sg["lo"], "signed_hi": sg["hi"],
                         "n": sq["n"]})
    return pd.DataFrame(rows)
