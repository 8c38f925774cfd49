"""Rows of the aliasing chapter: Figure 1 centre and Figure 4 a-d, from ``results/aliasing``.

The rows call the chapter's own functions (:mod:`lielib.book.aliasing.analysis`): squared
shares ``sum_i value_i / sum_i value_all,i`` and signed shares ``sum_i <c, L f>_i / sum_i
||L f||_i^2`` of groups of modules, each a ratio of means over images with a paired
bootstrap interval, under the paper's stencil and x-translation.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from ..aliasing.analysis import group_shares, read_budgets
from ..aliasing.layerwise import GROUPS_EXTRA
from ..results import MissingResultsError
from . import (
    Claim,
    bootstrap_indices,
    claim,
    combine_verdicts,
    fmt_ci,
    read_results,
    rel_paths,
    verdict_from_interval,
)

__all__ = ["CNN_MODEL", "MAIN_ACTION", "SHARE_FLOOR", "VIT_MODEL", "budgets",
           "floored_rank_correlation", "geometric_rank_correlation", "integer_shift_shares",
           "twin_ratio", "twin_units"]

METHODS = "aliasing/methods.csv"
MAIN_ACTION, STENCIL = "translate_x", "paper"
CNN_MODEL, VIT_MODEL = "zoo:resnet-large", "zoo:vit-large"
IMAGENET_CNN = "tf_efficientnet_lite0"
"""The real-ImageNet CNN at its native resolution, beside the zoo's 32 px stand-in."""
GEOMETRIC = ("translate_x", "rotate", "scale", "hyperbolic_rotate")
_NOT_KINDS = GROUPS_EXTRA


def budgets(results: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, tuple[str, ...]]:
    """``(modules, images, shares at the main action and stencil, files)``."""
    modules, images, paths = read_budgets(results / "aliasing")
    sh = group_shares(images[(images.action == MAIN_ACTION) & (images.stencil == STENCIL)])
    files = tuple(str(p.resolve().relative_to(results.resolve().parent)) for p in paths)
    return modules, images, sh, files


def _get(sh: pd.DataFrame, model: str, group: str) -> pd.Series:
    return sh[(sh.model == model) & (sh.group == group)].iloc[0]


def _models_of(images: pd.DataFrame, sh: pd.DataFrame, families: tuple[str, ...],
               what: str) -> list[str]:
    """The measured models of ``families``, sorted; raises when there is none."""
    fam = images.drop_duplicates("model").set_index("model").family
    models = sorted(m for m in sh.model.unique() if fam[m] in families)
    if not models:
        raise MissingResultsError(f"no {what} has a layer-wise budget yet")
    return models


def _lowest(sh: pd.DataFrame, models: list[str], group: str) -> tuple[str, dict[str, pd.Series]]:
    """The model with the smallest squared share of ``group``, and every model's row."""
    rows = {m: _get(sh, m, group) for m in models}
    return min(rows, key=lambda m: rows[m].share), rows


def _largest_kind(sh: pd.DataFrame, model: str) -> str:
    kinds = sh[(sh.model == model) & ~sh.group.isin(_NOT_KINDS)]
    return str(kinds.set_index("group").share.idxmax())


@claim("fig1-centre", source="Figure 1 centre", chapter="aliasing",
       section="(a) CNNs: activations, and downsampling or non-linear modules",
       paper="Non-linearities contribute surprisingly much of the layer-wise equivariance "
             "error, in CNNs and ViTs alike")
def _fig1_centre(results: Path, base: Claim) -> Claim:
    _, _, sh, files = budgets(results)
    if CNN_MODEL not in set(sh.model):
        raise MissingResultsError(f"{CNN_MODEL} has no layer-wise budget yet")
    parts, tops, act = [], [], {}
    for model in (CNN_MODEL, IMAGENET_CNN):
        if model not in set(sh.model):
            parts.append(f"{model}: not measured yet")
            continue
        a = act[model] = _get(sh, model, "activation")
        largest = _largest_kind(sh, model)
        tops.append(largest == "activation")
        parts.append(
            f"{model}: activations {fmt_ci(100 * a.share, 100 * a.share_lo, 100 * a.share_hi, 1)}% "
            f"squared, {fmt_ci(100 * a.signed, 100 * a.signed_lo, 100 * a.signed_hi, 1)}% signed "
            f"(largest kind: {largest}; n = {int(a.n)} images)")
    if VIT_MODEL in set(sh.model):
        v = _get(sh, VIT_MODEL, "embed_or_norm")
        parts.append(f"{VIT_MODEL}: patch embedding and norms "
                     f"{fmt_ci(100 * v.share, 100 * v.share_lo, 100 * v.share_hi, 1)}% squared")
    else:
        parts.append(f"{VIT_MODEL}: not measured yet")
    verdict = "reproduced" if all(tops) else ("partly" if any(tops) else "not reproduced")
    r = act[CNN_MODEL]
    return replace(base, value=100 * r.share, lo=100 * r.share_lo, hi=100 * r.share_hi,
                   n=int(r.n), verdict=verdict, files=files,
                   glued=(("act_cnn_share", 100 * r.share),), measured=(
                       "Share of the layer-wise error (x-translation, paper's stencil) in the "
                       f"activations: {'; '.join(parts)}; paired bootstrap over images. "
                       "Rule: reproduced for a CNN when activations are its largest kind, partly when "
                       "for some CNNs; the zoo "
                       "model is a 32 px stand-in, EfficientNet-Lite0 runs at its native 224 px "
                       "with ImageNet weights."))


@claim("fig4a", source="Figure 4a", chapter="aliasing",
       section="(a) CNNs: activations, and downsampling or non-linear modules",
       paper="In CNNs, downsampling layers and non-linearities carry most of the error")
def _fig4a(results: Path, base: Claim) -> Claim:
    _, images, sh, files = budgets(results)
    cnns = _models_of(images, sh, ("cnn",), "CNN")
    low, rows = _lowest(sh, cnns, "nonlinear_or_down")
    r, high = rows[low], max(v.share for v in rows.values())
    verdict = "reproduced" if all(v.share_lo > 0.5 for v in rows.values()) else (
        "partly" if any(v.share_lo > 0.5 for v in rows.values()) else "not reproduced")
    return replace(base, value=100 * r.share, lo=100 * r.share_lo, hi=100 * r.share_hi,
                   n=int(r.n), verdict=verdict, files=files,
                   glued=(("cnn_alias_min", 100 * r.share), ("cnn_alias_max", 100 * high)),
                   measured=(
                       f"Share from downsampling or non-linear modules in {len(cnns)} CNNs: "
                       f"{100 * r.share:.0f}% to {100 * high:.0f}%; lowest ({low}) "
                       f"{fmt_ci(100 * r.share, 100 * r.share_lo, 100 * r.share_hi, 1)}% over n = "
                       f"{int(r.n)} images. Close to a tautology: the other modules are stride-1 "
                       "convolutions and BatchNorms, which are linear. Rule: reproduced when every "
                       "CNN's interval is above 50%."))


@claim("fig4b", source="Figure 4b", chapter="aliasing",
       section="(b) Vision transformers and Mixers: the patch embedding and the norms",
       paper="In ViTs, the patch embedding (the one downsampling step) is the largest contributor")
def _fig4b(results: Path, base: Claim) -> Claim:
    modules, images, sh, files = budgets(results)
    tok = _models_of(images, sh, ("vit", "mixer"), "token model")
    main = modules[(modules.action == MAIN_ACTION) & (modules.stencil == STENCIL)
                   & modules.model.isin(tok)]
    tops = main.sort_values("value", ascending=False).groupby("model").head(1)
    n_top = int(tops.layer_kind.eq("embed").sum())
    low, rows = _lowest(sh, tok, "embed")
    r = rows[low]
    verdict = "reproduced" if n_top == len(tok) else ("partly" if n_top else "not reproduced")
    return replace(base, value=100 * r.share, lo=100 * r.share_lo, hi=100 * r.share_hi,
                   n=int(r.n), verdict=verdict, files=files,
                   glued=(("tok_embed_share", 100 * r.share),), measured=(
                       f"The patch embedding is the largest module in {n_top} of {len(tok)} "
                       f"token models; lowest embedding share ({low}) "
                       f"{fmt_ci(100 * r.share, 100 * r.share_lo, 100 * r.share_hi, 1)}% "
                       f"(n = {int(r.n)} images, paired bootstrap). Rule: reproduced when the embedding is "
                       "the largest module in every token model, partly when in some."))


def geometric_rank_correlation(modules: pd.DataFrame, model: str = CNN_MODEL,
                               stencil: str = STENCIL) -> float:
    """Mean pairwise Spearman rho of the modules' squared shares across the geometric actions.

    The chapter's Figure 4c statistic, on the mean over images of each module's value.
    """
    ranks = _share_table(modules, model, stencil)
    k = ranks.shape[1]
    return float(ranks.corr("spearman").where(~np.eye(k, dtype=bool)).stack().mean())


SHARE_FLOOR = 0.01
"""Figure 4c on the modules that carry error: squared share above 1% for at least one
geometric action (fixed before the verdict; modules tied near 0 inflate a rank correlation)."""


MIN_MODULES = 5
"""Fewer modules above the floor than this: no interval (a rank correlation of 2 to 4
modules takes a handful of values)."""


def _share_table(modules: pd.DataFrame, model: str, stencil: str) -> pd.DataFrame:
    """Module x geometric action: each module's squared share of the action's total."""
    sub = modules[(modules.model == model) & (modules.stencil == stencil)
                  & modules.action.isin(GEOMETRIC)].copy()
    sub["share"] = sub["value"] / sub.groupby("action")["value"].transform("sum")
    return sub.pivot_table(index="module", columns="action", values="share")


def floored_rank_correlation(modules: pd.DataFrame, model: str = CNN_MODEL,
                             stencil: str = STENCIL, floor: float = SHARE_FLOOR) -> dict:
    """:func:`geometric_rank_correlation` on the modules above ``floor`` for some action,
    with a bootstrap interval over those modules."""
    table = _share_table(modules, model, stencil)
    kept = table[(table > floor).any(axis=1)].reset_index(drop=True)
    off = ~np.eye(kept.shape[1], dtype=bool)

    def stat(idx: np.ndarray) -> float:
        return float(kept.iloc[idx].corr("spearman").to_numpy()[off].mean())

    lo = hi = float("nan")
    if len(kept) >= MIN_MODULES:
        lo, hi = bootstrap_indices(stat, len(kept))
    value = stat(np.arange(len(kept))) if len(kept) >= 2 else float("nan")
    return {"value": value, "lo": lo, "hi": hi, "n": len(kept), "n_all": len(table)}


@claim("fig4c", source="Figure 4c", chapter="aliasing",
       section="(c) A ResNet, layer by layer, for five transformations",
       paper="The same layers carry the error whatever the geometric transformation")
def _fig4c(results: Path, base: Claim) -> Claim:
    modules, _, _, files = budgets(results)
    if CNN_MODEL not in set(modules.model):
        raise MissingResultsError(f"{CNN_MODEL} has no layer-wise budget yet")
    n_img = int(modules.loc[modules.model == CNN_MODEL, "n_images"].iloc[0])
    stencils = [s for s in ("paper", "central") if s in set(modules[modules.model == CNN_MODEL].stencil)]
    fits = {s: floored_rank_correlation(modules, stencil=s) for s in stencils}
    per = {s: "reproduced" if f["lo"] > 0.5 else "not reproduced" for s, f in fits.items()}
    verdict = combine_verdicts(list(per.values()))
    every = geometric_rank_correlation(modules)
    main = fits[STENCIL]
    text = "; ".join(
        f"{s} stencil " + (fmt_ci(f["value"], f["lo"], f["hi"]) if np.isfinite(f["lo"]) else
                           f"{f['value']:.2f} (no interval: fewer than {MIN_MODULES} modules)")
        + f" over n = {f['n']} of {f['n_all']} modules ({per[s]})" for s, f in fits.items())
    ok = np.isfinite(main["lo"])
    return replace(base, value=main["value"], lo=main["lo"] if ok else None,
                   hi=main["hi"] if ok else None, n=main["n"],
                   verdict=verdict, files=files, glued=(("geo_rank_corr", every),), measured=(
                       f"{CNN_MODEL}: mean Spearman ρ of the modules' mean squared shares "
                       f"between the four geometric actions, on the modules whose share is above "
                       f"{100 * SHARE_FLOOR:.0f}% for at least one of them (bootstrap over "
                       f"modules; {n_img} images per action): {text}. On every module, "
                       f"including those tied near 0: {every:.2f} (paper's stencil). Rule: a "
                       "verdict per stencil, reproduced when the interval is above 0.5 (a "
                       "stencil without an interval counts as not reproduced); combined."))


def integer_shift_shares(methods: pd.DataFrame, kind: str = "activation") -> pd.DataFrame:
    """Per model, the share of ``kind`` modules in the exact layer-wise translation budget and
    in the integer-shift error, over the same modules, with a bootstrap interval over
    modules of their difference (percentage points)."""
    rows = []
    md = methods[(methods.module != "(residual)") & methods["shift"].notna()]
    for model, g in md.groupby("model", sort=True):
        is_kind = (g.layer_kind == kind).to_numpy()
        exact, shift = g.exact.to_numpy(), g["shift"].to_numpy()

        def diff(idx: np.ndarray, exact=exact, shift=shift, is_kind=is_kind) -> float:
            e, s, k = exact[idx], shift[idx], is_kind[idx]
            return 100 * (e[k].sum() / e.sum() - s[k].sum() / s.sum())

        lo, hi = bootstrap_indices(diff, len(g))
        rows.append({"model": model, "exact": 100 * exact[is_kind].sum() / exact.sum(),
                     "shift": 100 * shift[is_kind].sum() / shift.sum(),
                     "diff": diff(np.arange(len(g))), "lo": lo, "hi": hi, "n": len(g),
                     "n_images": 1})
    return pd.DataFrame(rows)


@claim("fig4d", source="Figure 4d", chapter="aliasing",
       section="(d) Exact against the probe estimator and against integer shifts",
       paper="Metrics built on integer shifts cannot see aliasing: they miss the error the "
             "activations contribute under continuous translation")
def _fig4d(results: Path, base: Claim) -> Claim:
    from scipy.stats import spearmanr

    md = read_results(results, METHODS)
    shares = integer_shift_shares(md)
    if shares.empty:
        raise MissingResultsError(f"{METHODS} holds no integer-shift column yet")
    per = {r.model: verdict_from_interval(r.lo, r.hi, 1) for r in shares.itertuples()}
    low = shares.sort_values("diff").iloc[0]
    allm = md[md.module != "(residual)"]
    probe = float(spearmanr(allm.exact, allm.probes).statistic)
    text = "; ".join(f"{r.model}: {r.exact:.1f}% of the exact budget, {r.shift:.1f}% of the "
                     f"integer-shift error, difference {fmt_ci(r.diff, r.lo, r.hi, 1)} points over "
                     f"{r.n} modules ({per[r.model]})" for r in shares.itertuples())
    return replace(base, value=float(low["diff"]), lo=float(low.lo), hi=float(low.hi),
                   n=int(low.n), verdict=combine_verdicts(list(per.values())),
                   files=rel_paths(results, METHODS), glued=(("rank_probe", probe),), measured=(
                       "Share of the activations (x-translation, exact decomposition on one "
                       "image per model) against their share of the integer-shift error, each "
                       "module rolled by its stride, bootstrap over modules: " + text + ". A "
                       "pointwise activation commutes with whole-pixel shifts, so its "
                       "integer-shift error is 0 by construction. The 100-probe estimator ranks "
                       f"modules like the exact one (Spearman {probe:.3f}). Rule: per model, "
                       "reproduced when the interval of the difference is above 0; combined."))


def twin_units(per_image: pd.DataFrame, steps: int, action: str, metric: str) -> pd.DataFrame:
    """One row per pair (``twin_seed``) and image: the plain model's and the twin's value."""
    part = per_image[(per_image.twin_steps == steps) & (per_image.action == action)]
    wide = part.pivot_table(index=["twin_seed", "image"], columns="variant", values=metric)
    return wide.dropna().reset_index()


def twin_ratio(per_image: pd.DataFrame, steps: int, action: str, metric: str) -> dict:
    """``mean(plain) / mean(twin)`` over pairs and images, with a hierarchical bootstrap
    interval: pairs (trainings), then images within each drawn pair."""
    from ..stats import cluster_bootstrap

    units = twin_units(per_image, steps, action, metric)
    plain, twin = units["plain"].to_numpy(), units["blurall"].to_numpy()
    boot = cluster_bootstrap(units, lambda r: plain[r].sum() / twin[r].sum(), "twin_seed",
                             within="image")
    return {"ratio": boot["estimate"], "lo": boot["lo"], "hi": boot["hi"],
            "pairs": boot["n_clusters"], "n_images": units.image.nunique()}


@claim("twin", source="abstract; Figure 4a (aliasing as the cause)", chapter="aliasing",
       section="Beyond the paper: a ResNet-18 with every strided path blurred",
       paper="Many violations of equivariance can be linked to spatial aliasing: a ResNet "
             "whose subsampling steps are anti-aliased should have lower LEE")
def _twin(results: Path, base: Claim) -> Claim:
    from ..aliasing.analysis import read_twin

    per_image, _, models, paths = read_twin(results / "aliasing")
    budgets_ = sorted(per_image.twin_steps.unique())
    matched = budgets_[-1]
    acc = models.groupby(["variant", "steps"]).test_acc.agg(["min", "max"])
    per, texts, head = {}, [], None
    for metric, label in (("lee", "LEE"), ("rho", "sensitivity ratio ρ")):
        for action in GEOMETRIC:
            r = twin_ratio(per_image, matched, action, metric)
            per[(metric, action)] = verdict_from_interval(r["lo"], r["hi"], 1, null=1.0)
            texts.append(f"{label} {action} {fmt_ci(r['ratio'], r['lo'], r['hi'])} "
                         f"({per[(metric, action)]})")
            if (metric, action) == ("lee", MAIN_ACTION):
                head = r
    plain_acc = acc.loc["plain"].iloc[0]
    twin_acc = acc.loc[("blurall", matched)]
    return replace(base, value=head["ratio"], lo=head["lo"], hi=head["hi"],
                   n=head["n_images"], verdict=combine_verdicts(list(per.values())),
                   files=tuple(str(p.resolve().relative_to(results.resolve().parent)) for p in paths),
                   measured=(
                       f"Plain ResNet-18 / its twin with every subsampling step blurred, mean "
                       f"over {head['pairs']} pairs (seeds) and n = {head['n_images']} images, "
                       f"hierarchical bootstrap (pairs, then images); twins trained {matched} "
                       f"steps to match accuracy (plain {100 * plain_acc['min']:.1f} to "
                       f"{100 * plain_acc['max']:.1f}%, twins {100 * twin_acc['min']:.1f} to "
                       f"{100 * twin_acc['max']:.1f}%): " + "; ".join(texts) + ". Rule: per "
                       "metric and geometric action, reproduced when the interval is above 1 "
                       "(the twin more equivariant), reversed when below; combined."))
