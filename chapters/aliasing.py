# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Where equivariance is lost: aliasing, layer by layer
#
# **Claim.** The paper traces most of a trained network's equivariance error to *aliasing*:
# downsampling layers and non-linearities create frequencies the next grid cannot hold, so
# a sub-pixel shift of the input is not a shift of the features
# ({cite:p}`gruver2023lie`, Figure 1 centre and Figure 4; {cite:p}`azulay2019deep`,
# {cite:p}`zhang2019making`, {cite:p}`karras2021alias`). The evidence is a chain rule.
# Writing the network as modules $m$ with inputs $x_m$ and outputs $y_m$, its Lie
# derivative splits as
#
# $$
# L f(x) = \sum_m J_{>m}\, L m(x_m) + r, \qquad
# L m(x_m) = J_m\, \tau(x_m) - \tau(y_m),
# $$
#
# where $\tau$ is the action's tangent on each tensor in its own layout (NCHW, NHWC, or
# tokens with prefix tokens), $J_{>m}$ is the Jacobian of the rest of the network up to the
# softmax, and $r$ collects functional operations no module covers (adding a positional
# embedding, a token mean). A module's share is $\lVert J_{>m} L m \rVert^2$. The paper
# estimates it with 100 random probes per image; `lielib.layerwise_lee` computes it exactly
# (forward-mode AD with one shared primal per chunk of modules, or one backward pass per
# class when there are few classes), and its signed contributions add up to the end-to-end
# Lie derivative, which the tests check on ResNet, ViT, ConvNeXt, EfficientNet and Mixer
# models.
#
# Without ImageNet weights for the paper's ResNet-50, ViT and Mixer, this chapter measures
# the trained models this machine has: EfficientNet-Lite0 with its real ImageNet weights
# on the offline photos, and the Fashion-MNIST mini-zoo. The parameters below choose other
# models; `python -m lielib.book.aliasing --imagenet resnet50 vit_small_patch16_224
# mixer_b16_224` runs the paper's models wherever their weights exist.

# %% tags=["parameters"]
results_dir = "results/aliasing"  # tables written by `python -m lielib.book.aliasing`
recompute = False  # True: rerun the experiments and overwrite the tables (minutes on a CPU)
cnn_model = "zoo:resnet18"  # the CNN of Figure 1 centre and the ResNet of Figure 4c
vit_model = "zoo:vit_p8"  # the ViT of Figure 1 centre
main_action = "translate_x"  # the action of Figures 1 and 4a, 4b
actions = ["translate_x", "rotate", "scale", "hyperbolic_rotate", "saturate"]

# %% tags=["hide-input"]

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display
from myst_nb import glue

from lielib.book.paths import repo_root
from lielib.book.plotting import LAYER_KIND_PALETTE, OKABE_ITO, action_label, use_theme
from lielib.book.results import MissingResultsError, provenance_markdown, read_or_compute

ROOT = repo_root()
RESULTS = (ROOT / results_dir).resolve()
HOW = "python -m lielib.book.aliasing"
use_theme()
PALETTE = LAYER_KIND_PALETTE
KINDS = ["conv", "pool", "activation", "norm", "linear", "mlp", "attention", "embed", "block",
         "other", "residual"]
written = []


def compute() -> None:
    """All four tables come from one run of the experiments; run it once."""
    if not written:
        from lielib.book.aliasing import run

        written.extend(run(RESULTS))


tables, paths, missing, skipped = {}, [], [], []
for name in ("layerwise", "methods", "antialias", "antialias_summary"):
    paths.append(RESULTS / f"{name}.csv")
    try:
        tables[name], meta = read_or_compute(paths[-1], compute, recompute=recompute, how=HOW)
        skipped += [f"`{name}.csv`: {s}" for s in meta.get("skipped", [])]
    except MissingResultsError as err:
        print(f"skipped {name}: {err}")
        missing.append(str(err))
if missing:
    display(Markdown("```{warning}\nSome results are missing; the sections that need them are "
                     "skipped.\n\n" + "\n\n".join(missing) + "\n```"))
if skipped:
    display(Markdown("```{note}\nSkipped when the tables were made (weights, checkpoints or "
                     "data missing on that machine), as recorded in their metadata:\n\n"
                     + "\n".join(f"- {s}" for s in dict.fromkeys(skipped)) + "\n```"))


def shares(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean value over images per module, as a share of the model's total per action."""
    keys = ["model", "action", "module", "module_type", "layer_kind", "order", "call",
            "downsampling"]
    per = frame.groupby(keys, as_index=False).value.mean()
    per["share"] = per.value / per.groupby(["model", "action"]).value.transform("sum")
    return per.sort_values(["model", "action", "order"])


def kind_shares(per: pd.DataFrame) -> pd.DataFrame:
    out = per.groupby(["model", "action", "layer_kind"]).share.sum().unstack("layer_kind")
    return out.reindex(columns=[k for k in KINDS if k in out.columns]).fillna(0.0)


lw = tables.get("layerwise")
per = shares(lw) if lw is not None else None
if lw is not None:
    families = lw.drop_duplicates("model").set_index("model").family
    glue("n_models", len(families), display=False)
    glue("model_list", ", ".join(f"`{m}`" for m in families.index), display=False)
    glue("n_images_zoo", int(lw[lw.dataset == "fashion-mnist"].image.nunique()), display=False)
    glue("n_photos", int(lw[lw.dataset == "photos"].image.nunique()), display=False)

# %% [markdown]
# ## Cumulative contributions through the depth of a network
#
# {glue:text}`n_models` trained models ({glue:text}`model_list`) were decomposed exactly on
# {glue:text}`n_images_zoo` Fashion-MNIST test images (zoo) or {glue:text}`n_photos`
# photos (ImageNet models). Figure 1 centre of the paper stacks each layer's contribution
# along the depth of a CNN and of a ViT; the same picture follows, the x-axis being the
# position of the module in execution order, the areas the cumulative share of each layer
# kind.

# %% tags=["hide-input"]
def cumulative_plot(ax, model: str, action: str) -> None:
    sub = per[(per.model == model) & (per.action == action)].sort_values("order")
    if sub.empty:
        ax.set_title(f"{model}: no results")
        ax.axis("off")
        return
    depth = np.linspace(0, 1, len(sub))
    kinds = [k for k in KINDS if k in set(sub.layer_kind)]
    stack = [np.cumsum(np.where(sub.layer_kind == k, sub.share, 0.0)) for k in kinds]
    ax.stackplot(depth, stack, labels=kinds, colors=[PALETTE.get(k, PALETTE["other"])
                                                      for k in kinds], alpha=0.9)
    ax.set(title=f"{model} ({action_label(action).lower()})", xlabel="depth (module order)",
           ylabel="cumulative share", xlim=(0, 1), ylim=(0, 1.02))


if per is not None:
    shown = [m for m in (cnn_model, vit_model) if m in set(per.model)]
    fig, axes = plt.subplots(1, max(len(shown), 1), figsize=(5.5 * max(len(shown), 1), 3.6),
                             squeeze=False)
    for ax, m in zip(axes[0], shown):
        cumulative_plot(ax, m, main_action)
    handles, labels = axes[0][0].get_legend_handles_labels()
    for ax in axes[0][1:]:
        h, lab = ax.get_legend_handles_labels()
        handles += [x for x, y in zip(h, lab) if y not in labels]
        labels += [y for y in lab if y not in labels]
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.tight_layout()
    plt.show()

# %% [markdown]
# ## (a) CNNs: downsampling and non-linearities
#
# For every CNN, the share of the layer-wise error by layer kind, and the share of the
# modules that shrink the grid (strided convolutions, pooling) against all others.

# %% tags=["hide-input"]
if per is not None:
    main = per[per.action == main_action]
    ks = kind_shares(main).droplevel("action")
    fam = families.reindex(ks.index)
    cnn = ks[fam == "cnn"]
    cnn = cnn.loc[:, cnn.sum() > 0]
    down = main.groupby(["model", "downsampling"]).share.sum().unstack().reindex(cnn.index)
    act_down = main.assign(
        aliasing=main.downsampling | (main.layer_kind == "activation")
    ).groupby("model").apply(lambda g: g.share[g.aliasing].sum(), include_groups=False)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.4), gridspec_kw={"width_ratios": [3, 1.4]})
    cnn.plot.barh(stacked=True, ax=axes[0], color=[PALETTE[k] for k in cnn.columns], width=0.75)
    axes[0].set(xlabel=f"share of layer-wise error ({action_label(main_action).lower()})",
                ylabel="", xlim=(0, 1))
    axes[0].legend(loc="upper center", bbox_to_anchor=(0.5, -0.25), frameon=False, fontsize=8,
                   ncol=len(cnn.columns))
    (down.fillna(0.0).get(True, 0) * 100).plot.barh(ax=axes[1], color=OKABE_ITO["sky_blue"])
    axes[1].set(xlabel="% from downsampling modules", ylabel="", xlim=(0, 100))
    axes[1].set_yticklabels([])
    fig.tight_layout()
    plt.show()
    glue("cnn_alias_min", 100 * float(act_down.reindex(cnn.index).min()), display=False)
    glue("cnn_alias_max", 100 * float(act_down.reindex(cnn.index).max()), display=False)
    glue("cnn_count", len(cnn), display=False)
    display(cnn.assign(downsampling=down.fillna(0.0).get(True, 0),
                       downsampling_or_activation=act_down.reindex(cnn.index))
            .style.format("{:.3f}"))

# %% [markdown]
# In all {glue:text}`cnn_count` CNNs, modules that downsample or are non-linear carry
# {glue:text}`cnn_alias_min:.0f` to {glue:text}`cnn_alias_max:.0f`% of the layer-wise error
# (table above): the strided convolutions, the pooling layers and the activations.
#
# ## (b) Vision transformers and Mixers: the patch embedding
#
# A ViT has a single downsampling step, the strided convolution of the patch embedding,
# and it is the largest single contributor, as the paper reports.

# %% tags=["hide-input"]
if per is not None:
    tok = ks[fam.isin(["vit", "mixer"])]
    tok = tok.loc[:, tok.sum() > 0]
    top = (main[main.model.isin(tok.index)].sort_values("share", ascending=False)
           .groupby("model").head(1).set_index("model"))
    if len(tok):
        fig, ax = plt.subplots(figsize=(8, 0.6 + 0.5 * len(tok)))
        tok.plot.barh(stacked=True, ax=ax, color=[PALETTE[k] for k in tok.columns], width=0.7)
        ax.set(xlabel=f"share of layer-wise error ({action_label(main_action).lower()})",
               ylabel="", xlim=(0, 1))
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, fontsize=8)
        fig.tight_layout()
        plt.show()
        display(top[["module", "module_type", "layer_kind", "share"]]
                .style.format({"share": "{:.3f}"}))
    n_embed_top = int((top.layer_kind == "embed").sum())
    glue("tok_count", len(top), display=False)
    glue("tok_embed_top", n_embed_top, display=False)
    glue("tok_embed_share", 100 * float(tok.get("embed", pd.Series([np.nan])).mean()),
         display=False)

# %% [markdown]
# The patch embedding is the largest single contributor in {glue:text}`tok_embed_top` of
# the {glue:text}`tok_count` token models, with on average {glue:text}`tok_embed_share:.0f`%
# of the layer-wise error; the residual row, mostly the added positional embedding, stays
# small.
#
# ## (c) A ResNet, layer by layer, for five transformations
#
# The paper's Figure 4c shows ResNet-50's per-layer shares for translation, rotation,
# scaling, hyperbolic rotation and intensity scaling ("saturate"). If aliasing is the
# cause, the same layers stand out whatever the geometric transformation, while the
# intensity scaling, which commutes with every positively homogeneous layer (convolutions
# without bias, ReLU, max pooling), picks out biases and normalisation instead.

# %% tags=["hide-input"]
if per is not None and cnn_model in set(per.model):
    res = per[(per.model == cnn_model) & per.action.isin(actions)]
    acts = [a for a in actions if a in set(res.action)]
    fig, axes = plt.subplots(len(acts), 1, figsize=(12, 1.2 * len(acts) + 1.4), sharex=True)
    axes = np.atleast_1d(axes)
    for ax, a in zip(axes, acts):
        sub = res[res.action == a].sort_values("order")
        ax.bar(np.arange(len(sub)), sub.share, color=[PALETTE.get(k, PALETTE["other"])
                                                      for k in sub.layer_kind], width=0.85)
        ax.set_ylabel(action_label(a).split(" (")[0], rotation=0, ha="right", va="center",
                      fontsize=8)
        ax.set_ylim(0, 1)
    names = sub.module.tolist()
    step = max(1, len(names) // 70)
    axes[-1].set_xticks(np.arange(len(names))[::step], names[::step], rotation=90, fontsize=6)
    axes[-1].set_xlim(-0.6, len(names) - 0.4)
    fig.suptitle(f"{cnn_model}: share of each module", fontsize=10)
    fig.tight_layout()
    plt.show()
    ranks = res.pivot_table(index="module", columns="action", values="share")
    geo = [a for a in acts if a != "saturate"]
    corr = ranks[geo].corr("spearman").where(~np.eye(len(geo), dtype=bool)).stack().mean()
    glue("geo_rank_corr", float(corr), display=False)
    top_geo = ranks[geo].mean(axis=1).sort_values(ascending=False).head(3).index.tolist()
    glue("geo_top", ", ".join(f"`{m}`" for m in top_geo), display=False)
else:
    glue("geo_rank_corr", float("nan"), display=False)
    glue("geo_top", "(missing)", display=False)

# %% [markdown]
# Across the four geometric transformations the modules' shares have a mean Spearman rank
# correlation of {glue:text}`geo_rank_corr:.2f`; the same modules lead
# ({glue:text}`geo_top`).
#
# ## (d) Exact against the probe estimator and against integer shifts
#
# The probe estimator averages $(z^\top J_{>m} L m)^2$ over Gaussian $z$; each term is
# $\lVert J_{>m} L m\rVert^2$ times a $\chi^2_1$ variable, so 100 probes leave about
# $\sqrt{2/100} \approx 14\%$ relative noise per module. An integer-shift metric, by
# contrast, rolls each module's input by its stride and compares with its output rolled by
# one pixel (`lielib.decompose.layerwise_shift_error`); shifts by whole multiples of the
# stride never see aliasing, so it ranks modules differently.

# %% tags=["hide-input"]
md = tables.get("methods")
if md is not None:
    md = md[md.module != "(residual)"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for model, sub in md.groupby("model"):
        ok = sub[(sub.exact > 0) & (sub.probes > 0)]
        axes[0].loglog(ok.exact, ok.probes, "o", ms=3, alpha=0.7, label=model)
        ok = sub[(sub.exact > 0) & (sub["shift"] > 0)]
        axes[1].loglog(ok.exact, ok["shift"], "o", ms=3, alpha=0.7, label=model)
    lim = [md.exact[md.exact > 0].min(), md.exact.max()]
    axes[0].plot(lim, lim, color="k", lw=0.8)
    axes[0].set(xlabel="exact $\\|J_{>m} L m\\|^2$", ylabel="100-probe estimate")
    axes[1].set(xlabel="exact $\\|J_{>m} L m\\|^2$", ylabel="integer-shift error")
    axes[0].legend(fontsize=8, frameon=False)
    fig.tight_layout()
    plt.show()
    pos = md[md.exact > 1e-6 * md.groupby("model").exact.transform("max")]
    rel = ((pos.probes - pos.exact).abs() / pos.exact)
    glue("probe_rel_median", 100 * float(rel.median()), display=False)
    ratio = (pos.probes / pos.exact).groupby(pos.model).mean()
    glue("probe_ratio_range", " and ".join(f"{v:.2f} (`{k}`)" for k, v in ratio.items()),
         display=False)
    glue("rank_probe", float(md[["exact", "probes"]].corr("spearman").iloc[0, 1]), display=False)
    sh = md.dropna(subset=["shift"])
    glue("rank_shift", float(sh[["exact", "shift"]].corr("spearman").iloc[0, 1]), display=False)
    glue("methods_models", ", ".join(f"`{m}`" for m in md.model.unique()), display=False)
    glue("num_probes", int(md.num_probes.iloc[0]), display=False)

# %% [markdown]
# On {glue:text}`methods_models`, the {glue:text}`num_probes`-probe estimates of the
# modules that matter (exact value above $10^{-6}$ of the largest) deviate from the exact
# values by a median {glue:text}`probe_rel_median:.0f`% (Spearman correlation over all
# modules {glue:text}`rank_probe:.3f`). The deviations are correlated: the same probes
# serve every module, so one image's whole profile is scaled up or down at once (mean
# ratio of estimate to exact value {glue:text}`probe_ratio_range`), which is more than the
# $\sqrt{2/100}$ of a single module suggests when only one image is averaged. The
# integer-shift error ranks the modules quite differently (Spearman
# {glue:text}`rank_shift:.2f`), because it is blind to the sub-pixel aliasing the Lie
# derivative measures.

# %% [markdown]
# ## Beyond the paper: anti-aliasing with BlurPool
#
# If aliasing is the cause, blurring before every subsampling step
# {cite:p}`zhang2019making` should remove error where it arises. timm's `resnetblur18`
# is ResNet-18 with a BlurPool filter before each stride and no extra parameters. Two
# twins of the zoo's ResNet-18 are compared with it: the same trained weights with the
# filters inserted (`blurpool_inserted`), and `resnetblur18` trained from scratch with the
# zoo's recipe, budget and seed (`blurpool_trained`).

# %% tags=["hide-input"]
aa, summ = tables.get("antialias"), tables.get("antialias_summary")
VARIANTS = ["plain", "blurpool_inserted", "blurpool_trained"]
has_trained = False
if aa is not None and summ is not None:
    variants = [v for v in VARIANTS if v in set(aa.variant)]
    aper = shares(aa.assign(model=aa.variant))
    totals = aa.drop_duplicates(["variant", "action", "image"]).groupby(
        ["variant", "action"]).total.mean().unstack("variant").reindex(columns=variants)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    totals.plot.bar(ax=axes[0], logy=True, color=[OKABE_ITO["blue"], OKABE_ITO["grey"],
                                                  OKABE_ITO["orange"]][:len(variants)])
    axes[0].set(ylabel="end-to-end $\\|L f\\|^2$ (mean over images)", xlabel="")
    axes[0].set_xticklabels([action_label(a) for a in totals.index], rotation=30, ha="right")
    ksh = kind_shares(aper[aper.action == main_action]).droplevel("action").reindex(variants)
    ksh = ksh.loc[:, ksh.sum() > 0]
    ksh.plot.barh(stacked=True, ax=axes[1], width=0.6, color=[PALETTE[k] for k in ksh.columns])
    axes[1].set(xlabel=f"share of layer-wise error ({action_label(main_action).lower()})",
                ylabel="", xlim=(0, 1))
    axes[1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, fontsize=8)
    fig.tight_layout()
    plt.show()
    summary = summ.set_index("variant")
    display(summary.style.format(precision=4))
    geo = [a for a in totals.index if a != "saturate"]
    for v in variants:
        ratio = totals.loc[geo, "plain"] / totals.loc[geo, v]
        glue(f"acc_{v}", 100 * float(summary.accuracy[v]), display=False)
        glue(f"ratio_{v}_main", float(totals.loc[main_action, "plain"] / totals.loc[main_action, v]),
             display=False)
        glue(f"ratio_{v}_min", float(ratio.min()), display=False)
        glue(f"ratio_{v}_max", float(ratio.max()), display=False)
    glue("n_acc", int(summary.num_test_images.iloc[0]), display=False)
    has_trained = "blurpool_trained" in variants

# %% [markdown]
# Inserting the filters into the trained network without retraining breaks it: accuracy
# falls from {glue:text}`acc_plain:.1f`% to {glue:text}`acc_blurpool_inserted:.1f`% on
# {glue:text}`n_acc` test images, so its smaller Lie derivative (the plain model's
# translation error is {glue:text}`ratio_blurpool_inserted_main:.1f` times as large) is
# mostly that of a less confident model.

# %% tags=["hide-input"]
if has_trained:
    r = totals.loc[geo, "plain"] / totals.loc[geo, "blurpool_trained"]
    display(Markdown(
        "Trained with the filters, `resnetblur18` reaches "
        f"{100 * float(summary.accuracy['blurpool_trained']):.1f}% (plain: "
        f"{100 * float(summary.accuracy['plain']):.1f}%). The plain model's end-to-end error "
        "divided by the anti-aliased model's is "
        f"{float(r[main_action]) if main_action in r else float('nan'):.2f} for "
        f"{action_label(main_action).lower()} and between {float(r.min()):.2f} and "
        f"{float(r.max()):.2f} across the geometric transformations (above 1: the blurred "
        "network is more equivariant). " + (
            "At this training budget (the zoo's, one short epoch) anti-aliasing alone makes "
            "the trained network *less* locally equivariant for every geometric "
            "transformation, not more; whether a longer schedule changes that is not tested "
            "here." if r.max() < 1 else
            "Anti-aliasing makes the trained network more locally equivariant for every "
            "geometric transformation." if r.min() > 1 else
            "The effect of anti-aliasing depends on the transformation.")))
else:
    display(Markdown("```{note}\nThe anti-aliased twin trained from scratch is missing: "
                     "`python -m lielib.book.aliasing --train-blur --only antialias`.\n```"))

# %% [markdown]
# A caution on reading shares: the paper's stencil is a one-sided difference whose centre
# sits half a pixel off each grid, so even an alias-free downsampling layer gets a non-zero
# $L m$ that a later layer cancels. Signed contributions cancel in sums (the exact method's
# contributions add up to the end-to-end Lie derivative, while their squared norms add up
# to far more), so the squared shares rank layers; they are not a budget.

# %% tags=["hide-input"]
display(Markdown(provenance_markdown(paths)))
