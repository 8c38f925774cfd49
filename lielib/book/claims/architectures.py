"""Rows of the architectures chapter: the retrained zoo (``results/zoo``, ``zoo-lee.csv``)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from ..results import MissingResultsError
from ..stats import group_adds, ratio_ci, trend
from . import Claim, claim, fmt_ci, read_results, rel_paths, sign_verdict

__all__ = ["zoo_baseline", "zoo_models"]

ZOO_LEE, ZOO_ACC = "architectures/zoo-lee.csv", "zoo/accuracy.csv"


def zoo_models(results: Path) -> pd.DataFrame:
    """One row per converged zoo model at its final snapshot: mean of each column over images.

    Reads ``zoo/accuracy.csv`` and ``architectures/zoo-lee.csv`` (the retrained zoo).
    Adds ``lee_translate``, the mean of the x and y translation LEE.

    Raises:
        MissingResultsError: either table is missing (the zoo is still training).
    """
    for rel in (ZOO_ACC, ZOO_LEE):
        if not (results / rel).exists():
            raise MissingResultsError(f"results/{rel} is not there yet (the new zoo is training)")
    table = read_results(results, ZOO_LEE)
    table = table[table["final"].astype(str) == "True"]
    if "converged" in table:
        table = table[table["converged"].astype(str) == "True"]
    keys = [c for c in ("model", "family", "kind", "size", "n_train", "augment", "params",
                        "accuracy") if c in table]
    nums = [c for c in table.columns if c.startswith("lee_") or c in ("eq_t", "eq_r", "consistency")]
    out = table.groupby(keys, as_index=False, dropna=False)[nums].mean()
    out["lee_translate"] = (out["lee_translate_x"] + out["lee_translate_y"]) / 2
    return out


def zoo_baseline(results: Path) -> pd.DataFrame:
    """The zoo models of the architecture comparison: full data, no extra augmentation.

    Raises:
        MissingResultsError: fewer than 3 such models, or a single family, measured so far.
    """
    m = zoo_models(results)
    if "n_train" in m:
        m = m[m["n_train"] == m["n_train"].max()]
    if "augment" in m:
        m = m[m["augment"].astype(str).isin(["none", "nan"])]
    if len(m) < 3 or m.family.nunique() < 2:
        raise MissingResultsError(
            f"{len(m)} converged zoo models of {m.family.nunique()} family "
            f"({', '.join(sorted(m.family.unique())) or 'none'}) are measured so far; the "
            "comparison across architectures waits for two families or more")
    return m


@claim("fig1-right", source="Figure 1 right", chapter="architectures",
       section="LEE against accuracy (Figure 1, right)",
       paper="Translation LEE falls as ImageNet accuracy rises across hundreds of models "
             "(log LEE against accuracy, R² = 0.333)")
def _fig1_right(results: Path, base: Claim) -> Claim:
    m = zoo_baseline(results)
    t = trend(m["accuracy"], m["lee_translate"], log_y=True)
    verdict = sign_verdict(t["slope_lo"], t["slope_hi"], expect_negative=True)
    return replace(base, value=t["slope"], lo=t["slope_lo"], hi=t["slope_hi"], n=t["n"],
                   verdict=verdict, files=rel_paths(results, ZOO_LEE, ZOO_ACC), measured=(
                       f"Slope of log10 translation LEE per unit accuracy "
                       f"{fmt_ci(t['slope'], t['slope_lo'], t['slope_hi'])}, R² {t['r2']:.2f} "
                       f"[{t['r2_lo']:.2f}, {t['r2_hi']:.2f}], over n = {t['n']} zoo models "
                       f"measured so far ({', '.join(sorted(m.family.unique()))}) on Fashion-MNIST "
                       "(bootstrap over models)."))


@claim("family", source="Figure 1 right", chapter="architectures", section="Families",
       paper="Whatever the architecture: accuracy predicts LEE better than the family "
             "(CNN, ViT, Mixer) does")
def _family(results: Path, base: Claim) -> Claim:
    m = zoo_baseline(results)
    if m.family.nunique() < 2 or len(m) <= m.family.nunique() + 2:
        raise MissingResultsError(f"the zoo measured so far holds {len(m)} converged models of "
                                  f"{m.family.nunique()} family; the F test needs more")
    g = group_adds(m, "accuracy", "lee_translate", "family", log_y=True)
    verdict = "reproduced" if g["p"] >= 0.05 else "not reproduced"
    return replace(base, value=g["p"], n=g["n"], verdict=verdict,
                   files=rel_paths(results, ZOO_LEE, ZOO_ACC), measured=(
                       f"Adding the family to log LEE ~ accuracy raises R² from "
                       f"{g['r2_x']:.2f} to {g['r2_x_group']:.2f}; F test p = {g['p']:.3f} "
                       f"(n = {g['n']} models; reproduced when p ≥ 0.05)."))


@claim("transformers", source="abstract; Figure 1 right", chapter="architectures",
       section="Families",
       paper="Transformers can be as translation-equivariant as CNNs, or more, after training")
def _transformers(results: Path, base: Claim) -> Claim:
    m = zoo_baseline(results)
    table = read_results(results, ZOO_LEE)
    table = table[table["final"].astype(str) == "True"]
    best = {f: m[m.family == f].sort_values("lee_translate")["model"].iloc[0]
            for f in ("cnn", "vit") if (m.family == f).any()}
    if len(best) < 2:
        raise MissingResultsError("the zoo has no converged ViT or no converged CNN yet")
    per = {f: table[table.model == b].set_index("image")[["lee_translate_x", "lee_translate_y"]]
           .mean(axis=1) for f, b in best.items()}
    both = pd.concat(per, axis=1).dropna()
    r = ratio_ci(both["vit"].to_numpy(), both["cnn"].to_numpy())
    verdict = "reproduced" if r["lo"] <= 1 else "not reproduced"
    return replace(base, value=r["ratio"], lo=r["lo"], hi=r["hi"], n=r["n"], verdict=verdict,
                   files=rel_paths(results, ZOO_LEE), measured=(
                       f"Best ViT ({best['vit']}) / best CNN ({best['cnn']}) translation LEE "
                       f"{fmt_ci(r['ratio'], r['lo'], r['hi'])} on n = {r['n']} shared images "
                       "(paired bootstrap; reproduced when the interval reaches 1 or below)."))


@claim("metrics", source="comparison with sample-based metrics", chapter="architectures",
       section="The sample-based metrics against LEE",
       paper="Sample-based equivariance metrics (EQ-T, shift consistency) agree with LEE")
def _metrics(results: Path, base: Claim) -> Claim:
    m = zoo_baseline(results).dropna(subset=["eq_t"])
    if len(m) < 3:
        raise MissingResultsError("EQ-T is measured on fewer than 3 zoo models so far")
    t = trend(m["lee_translate"], m["eq_t"])
    verdict = sign_verdict(t["spearman_lo"], t["spearman_hi"], expect_negative=True)
    return replace(base, value=t["spearman"], lo=t["spearman_lo"], hi=t["spearman_hi"],
                   n=t["n"], verdict=verdict, files=rel_paths(results, ZOO_LEE), measured=(
                       f"Spearman ρ of EQ-T (dB) with translation LEE across models "
                       f"{fmt_ci(t['spearman'], t['spearman_lo'], t['spearman_hi'])}, n = {t['n']} "
                       "(agreement is ρ < 0)."))


@claim("data-trend", source="trends with training data", chapter="architectures", section="LEE against accuracy",
       paper="Models trained on more data are more equivariant")
def _data_trend(results: Path, base: Claim) -> Claim:
    m = zoo_models(results)
    if "n_train" not in m or m["n_train"].nunique() < 2:
        raise MissingResultsError("the zoo's data-size models are not measured yet")
    small = m[m["size"].astype(str) == "small"] if "size" in m else m
    small = small[small["augment"].astype(str).isin(["none", "nan"])] if "augment" in small else small
    if small["n_train"].nunique() < 2 or len(small) < 3:
        raise MissingResultsError("fewer than 3 small zoo models over 2 data sizes are measured")
    t = trend(np.log10(small["n_train"]), small["lee_translate"], log_y=True)
    verdict = sign_verdict(t["slope_lo"], t["slope_hi"], expect_negative=True)
    return replace(base, value=t["slope"], lo=t["slope_lo"], hi=t["slope_hi"], n=t["n"],
                   verdict=verdict, files=rel_paths(results, ZOO_LEE), measured=(
                       f"Slope of log10 translation LEE per decade of training images "
                       f"{fmt_ci(t['slope'], t['slope_lo'], t['slope_hi'])}, n = {t['n']} small "
                       "zoo models (bootstrap over models)."))

