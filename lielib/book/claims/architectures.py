"""Rows of the architectures chapter: the trained zoo (``results/zoo``, ``zoo-lee.csv``).

Every number comes from :mod:`lielib.book.architectures`, the functions the chapter calls,
and is listed in ``glued`` under the name the chapter glues it with.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd

from .. import architectures as A
from ..results import MissingResultsError
from . import Claim, claim, fmt_ci, read_results, rel_paths, sign_verdict

__all__ = ["zoo_models"]

ZOO_LEE, ZOO_ACC = "architectures/zoo-lee.csv", "zoo/accuracy.csv"


def zoo_models(results: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The per-image table and the converged trained models, one row each.

    Raises:
        MissingResultsError: a table is missing, or fewer than 3 converged models of two or
            more families are measured (the comparison across architectures needs both).
    """
    lee = read_results(results, ZOO_LEE)
    records = read_results(results, ZOO_ACC)
    snap = A.per_model(lee, records)
    models = snap[snap["final"].astype(bool) & snap["converged"].astype(bool)]
    if len(models) < 3 or models["family"].nunique() < 2:
        raise MissingResultsError(
            f"{len(models)} converged zoo models of {models['family'].nunique()} family are "
            "measured so far; the comparison across architectures waits for two or more")
    return lee, models.reset_index(drop=True)


@claim("fig1-right", source="Figure 1 right", chapter="architectures",
       section="LEE against accuracy across models (Figure 1, right)",
       paper="Translation LEE falls as ImageNet accuracy rises across hundreds of models "
             "(R² = 0.333 on a linear LEE axis)")
def _fig1_right(results: Path, base: Claim) -> Claim:
    _, m = zoo_models(results)
    fits = A.trends(m, ["lee_translate"]).set_index("axis")
    t, lg = fits.loc["linear"], fits.loc["log10"]
    verdict = sign_verdict(t["slope_lo"], t["slope_hi"], expect_negative=True)
    return replace(base, value=t["slope"], lo=t["slope_lo"], hi=t["slope_hi"], n=int(t["n"]),
                   verdict=verdict, files=rel_paths(results, ZOO_LEE, ZOO_ACC),
                   glued=(("translate_linear_slope", t["slope"]),
                          ("translate_linear_slope_lo", t["slope_lo"]),
                          ("translate_linear_slope_hi", t["slope_hi"]),
                          ("translate_linear_r2", t["r2"])),
                   measured=(
                       f"Slope of translation LEE per unit accuracy (linear axis) "
                       f"{fmt_ci(t['slope'], t['slope_lo'], t['slope_hi'])}, R² {t['r2']:.2f} "
                       f"[{t['r2_lo']:.2f}, {t['r2_hi']:.2f}]; log axis R² {lg['r2']:.2f}; "
                       f"n = {int(t['n'])} converged zoo models on Fashion-MNIST (bootstrap over "
                       "models)."))


@claim("family", source="Figure 1 right", chapter="architectures",
       section="Is the sign stable, and does the family matter beyond accuracy?",
       paper="Whatever the architecture: accuracy predicts LEE better than the family "
             "(CNN, ViT, Mixer) does")
def _family(results: Path, base: Claim) -> Claim:
    _, m = zoo_models(results)
    if len(m) < 5:
        raise MissingResultsError(f"{len(m)} converged models: the F test needs 5 or more")
    stab = A.stability(m, "lee_translate")
    g = stab["family_linear"]
    verdict = "reproduced" if g["p"] >= 0.05 else "not reproduced"
    return replace(base, value=g["p"], n=g["n"], verdict=verdict,
                   files=rel_paths(results, ZOO_LEE, ZOO_ACC),
                   glued=(("family_linear_p", g["p"]),),
                   measured=(
                       f"Adding the family to LEE ~ accuracy raises R² from {g['r2_x']:.2f} to "
                       f"{g['r2_x_group']:.2f}; F test p = {g['p']:.3g} (n = {g['n']} models; "
                       "reproduced when p ≥ 0.05, i.e. no evidence that the family matters)."))


@claim("transformers", source="abstract; Figure 1 right", chapter="architectures",
       section="Transformers and CNNs",
       paper="Transformers can be as translation-equivariant as CNNs, or more, after training")
def _transformers(results: Path, base: Claim) -> Claim:
    lee, m = zoo_models(results)
    if not {"vit", "cnn"} <= set(m["family"]):
        raise MissingResultsError("the zoo has no converged ViT or no converged CNN yet")
    r = A.best_ratio(lee, m, "vit", "cnn")
    verdict = "reproduced" if r["lo"] <= 1 else "not reproduced"
    return replace(base, value=r["ratio"], lo=r["lo"], hi=r["hi"], n=r["n"], verdict=verdict,
                   files=rel_paths(results, ZOO_LEE),
                   glued=(("vit_over_cnn", r["ratio"]), ("vit_over_cnn_lo", r["lo"]),
                          ("vit_over_cnn_hi", r["hi"])),
                   measured=(
                       f"Best ViT ({r['best']}) / best CNN ({r['best_reference']}) translation "
                       f"LEE {fmt_ci(r['ratio'], r['lo'], r['hi'])} on n = {r['n']} shared images "
                       "(paired bootstrap; reproduced when the interval reaches 1 or below)."))


@claim("metrics", source="comparison with sample-based metrics", chapter="architectures",
       section="The sample-based metrics against LEE",
       paper="Sample-based equivariance metrics (EQ-T, shift consistency) agree with LEE")
def _metrics(results: Path, base: Claim) -> Claim:
    _, m = zoo_models(results)
    agree = A.metric_agreement(m).set_index("metric")
    if "eq_t" not in agree.index:
        raise MissingResultsError("EQ-T is measured on fewer than 3 zoo models so far")
    t = agree.loc["eq_t"]
    verdict = sign_verdict(t["spearman_lo"], t["spearman_hi"], expect_negative=True)
    return replace(base, value=t["spearman"], lo=t["spearman_lo"], hi=t["spearman_hi"],
                   n=int(t["n"]), verdict=verdict, files=rel_paths(results, ZOO_LEE),
                   glued=(("rho_eq_t", t["spearman"]),),
                   measured=(
                       f"Spearman ρ of EQ-T (dB) with translation LEE across models "
                       f"{fmt_ci(t['spearman'], t['spearman_lo'], t['spearman_hi'])}, "
                       f"n = {int(t['n'])} (agreement is ρ < 0)."))


@claim("data-trend", source="trends with training data", chapter="architectures",
       section="One factor at a time: training-set size and shift augmentation",
       paper="Models trained on more data are more equivariant")
def _data_trend(results: Path, base: Claim) -> Claim:
    _, m = zoo_models(results)
    effects = A.factor_effects(m)
    if "data" not in effects:
        raise MissingResultsError("the zoo's data-size models are not measured yet")
    t = effects["data"]
    verdict = sign_verdict(t["slope_lo"], t["slope_hi"], expect_negative=True)
    return replace(base, value=t["slope"], lo=t["slope_lo"], hi=t["slope_hi"], n=t["n"],
                   verdict=verdict, files=rel_paths(results, ZOO_LEE),
                   glued=(("data_slope", t["slope"]),),
                   measured=(
                       f"Slope of log10 translation LEE per decade of training images "
                       f"{fmt_ci(t['slope'], t['slope_lo'], t['slope_hi'])}, n = {t['n']} small "
                       "zoo models at 2k, 8k and 60k images (bootstrap over models)."))
