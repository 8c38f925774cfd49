"""Rows of the architectures chapter: the trained zoo (``results/zoo``, ``zoo-lee.csv``) and
its extra runs (more seeds, equal passes: :mod:`lielib.book.zoo_runs`).

The zoo's 50 models are ten architectures in five variants each, one seed: every interval
across models resamples the architectures, and the seeds within them where seed runs
exist (:mod:`lielib.book.zoo_trends`). Each row states its unit, its n, and its rule.
``glued`` lists the numbers the chapter already glues that a row computes the same way.
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import architectures as A
from .. import zoo_trends as T
from ..results import MissingResultsError
from ..zoo_runs import passes_models, seed_models, zoo_seed0
from . import (
    Claim,
    claim,
    combine_verdicts,
    fmt,
    fmt_ci,
    read_results,
    rel_paths,
    verdict_from_interval,
)

__all__ = ["zoo_analysis", "zoo_models"]

ZOO_LEE, ZOO_ACC = "architectures/zoo-lee.csv", "zoo/accuracy.csv"
FAMILY_LABELS = {"cnn": "CNN", "vit": "ViT", "mixer": "Mixer"}


def _unit_text(n_kinds: int) -> str:
    return f"intervals over the {n_kinds} architectures (cluster bootstrap)"


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


def _stamp(results: Path) -> tuple:
    """What the cached analyses depend on: the zoo's tables and the runs' folders."""
    paths = [results / ZOO_LEE, results / ZOO_ACC, results / "zoo" / "runs",
             results / "architectures" / "zoo-lee" / "runs"]
    stamp = [(str(p), p.stat().st_mtime_ns) for p in paths if p.exists()]
    runs = results / "architectures" / "zoo-lee" / "runs"
    if runs.is_dir():
        stamp += [(str(p), p.stat().st_mtime_ns) for p in sorted(runs.rglob("*.csv"))]
    return tuple(stamp)


@lru_cache(maxsize=4)
def _analysis(results: str, stamp: tuple) -> dict[str, Any]:
    results_path = Path(results)
    zoo_models(results_path)  # raises when too few models are measured
    models = zoo_seed0(results_path)
    models = models[models["converged"].astype(bool)].reset_index(drop=True)
    seeds, seed_files = seed_models(results_path)
    return {"models": models, "seeds": seeds, "seed_files": seed_files,
            "fig1": T.fig1_right(models)}


def zoo_analysis(results: Path) -> dict[str, Any]:
    """The converged zoo models, the seed table and the Figure 1 right fits (cached on the
    tables' modification times, shared by the rows)."""
    return _analysis(str(results), _stamp(results))


def _files(results: Path, extra: list[str] = ()) -> tuple[str, ...]:
    return rel_paths(results, ZOO_LEE, ZOO_ACC) + tuple(
        rel_paths(results, *[str(Path(f).resolve().relative_to(results.resolve())) for f in extra]))


def _both_axes(fits: dict[str, dict], expected_sign: int) -> tuple[str, dict[str, str]]:
    """The rule of the trend rows: a verdict per axis from the slope's interval; both
    reproduced: reproduced; one: partly (combine_verdicts)."""
    per = {axis: verdict_from_interval(f["slope_lo"], f["slope_hi"], expected_sign)
           for axis, f in fits.items()}
    return combine_verdicts(list(per.values())), per


def _fit_text(f: dict) -> str:
    return (f"slope {fmt_ci(f['slope'], f['slope_lo'], f['slope_hi'])}, R² "
            f"{fmt_ci(f['r2'], f['r2_lo'], f['r2_hi'])}, Spearman "
            f"{fmt_ci(f['spearman'], f['spearman_lo'], f['spearman_hi'])}")


@claim("fig1-right", source="Figure 1 right", chapter="architectures",
       section="LEE against accuracy across models (Figure 1, right)",
       paper="Translation LEE falls as ImageNet accuracy rises across hundreds of models "
             "(R² = 0.333 on a linear LEE axis)")
def _fig1_right(results: Path, base: Claim) -> Claim:
    z = zoo_analysis(results)
    f = z["fig1"]
    lin, lg = f["fits"]["linear"], f["fits"]["log10"]
    verdict, per = _both_axes(f["fits"], -1)
    stable = all(bool(f[k][a]["same_sign"].all()) for k in ("loo_model", "loo_family")
                 for a in ("linear", "log10"))
    if verdict == "reproduced" and not stable:
        verdict = "partly"
    top, mixed = f["without_top"], f["mixed"]
    fam = f["loo_family"]["linear"].set_index("left_out")["slope"]
    return replace(base, value=lin["slope"], lo=lin["slope_lo"], hi=lin["slope_hi"],
                   n=int(lin["n"]), verdict=verdict, files=_files(results),
                   glued=(("translate_linear_slope", lin["slope"]),
                          ("translate_linear_r2", lin["r2"])),
                   measured=(
                       f"n = {int(lin['n'])} converged zoo models of {lin['n_clusters']} "
                       f"architectures (Fashion-MNIST, one seed), {_unit_text(lin['n_clusters'])}. Linear axis: "
                       f"{_fit_text(lin)} ({per['linear']}); log axis: {_fit_text(lg)} "
                       f"({per['log10']}). Mixed model with a random intercept per architecture: "
                       f"slope {fmt_ci(mixed['linear']['slope'], mixed['linear']['lo'], mixed['linear']['hi'])} "
                       f"linear, {fmt_ci(mixed['log10']['slope'], mixed['log10']['lo'], mixed['log10']['hi'])} "
                       f"log (Wald). Without {top['model']}, the model that moves the slope most: "
                       f"{fmt_ci(top['slope'], top['slope_lo'], top['slope_hi'])}, R² {top['r2']:.2f}. "
                       f"Leaving out one model keeps the sign in "
                       f"{int(f['loo_model']['linear']['same_sign'].sum())} of "
                       f"{len(f['loo_model']['linear'])} fits; leaving out a family gives "
                       + ", ".join(f"{fmt(v)} without {k}" for k, v in fam.items()) + ". "
                       "Rule: a verdict per axis from the slope's interval (below 0: "
                       "reproduced); both axes reproduced and every leave-one-out slope of the "
                       "same sign: reproduced; one axis: partly."))


@claim("fig1-right-seeds", source="Figure 1 right", chapter="architectures",
       section="LEE against accuracy across models (Figure 1, right)",
       paper="Translation LEE falls as accuracy rises across architectures (the ten "
             "architectures at one recipe, each with its training seeds)")
def _fig1_right_seeds(results: Path, base: Claim) -> Claim:
    z = zoo_analysis(results)
    s = T.seed_trend(z["seeds"])
    lin, lg = s["linear"], s["log10"]
    verdict, per = _both_axes({"linear": lin, "log10": lg}, -1)
    seeds = ", ".join(str(k) for k in s["seeds"])
    return replace(base, value=lin["slope"], lo=lin["slope_lo"], hi=lin["slope_hi"],
                   n=int(lin["n"]), verdict=verdict, files=_files(results, z["seed_files"][2:]),
                   measured=(
                       f"The small variant of each of the {lin['n_clusters']} architectures "
                       f"(60k images, no augmentation), training seeds {seeds}: "
                       f"{lin['units_min']} to {lin['units_max']} seeds per architecture, "
                       f"n = {int(lin['n'])} models; hierarchical bootstrap (architectures, then "
                       f"seeds within each). Linear axis: {_fit_text(lin)} ({per['linear']}); "
                       f"log axis: {_fit_text(lg)} ({per['log10']}). Rule: a verdict per axis "
                       "from the slope's interval (below 0: reproduced); both: reproduced, "
                       "one: partly."))


@claim("within-family", source="abstract; Figure 1 right", chapter="architectures",
       section="Is the sign stable, and does the family matter beyond accuracy?",
       paper="As models get more accurate they display more equivariance, regardless of "
             "architecture")
def _within_family(results: Path, base: Claim) -> Claim:
    z = zoo_analysis(results)
    w = T.within_family(z["models"])
    judged = w.dropna(subset=["slope_lo"])
    per = {r.family: verdict_from_interval(r.slope_lo, r.slope_hi, -1) for r in judged.itertuples()}
    unjudged = w[w["slope_lo"].isna()]
    verdicts = list(per.values()) + ["not reproduced" for r in unjudged.itertuples() if r.slope >= 0]
    verdict = combine_verdicts(verdicts) if verdicts else "not reproduced"
    cnn = w.set_index("family").loc["cnn"] if "cnn" in set(w.family) else w.iloc[0]
    parts = []
    for r in w.itertuples():
        ci = (f"slope {fmt_ci(r.slope, r.slope_lo, r.slope_hi)}, Spearman "
              f"{fmt_ci(r.spearman, r.spearman_lo, r.spearman_hi)} ({per[r.family]})"
              if r.family in per else
              f"slope {fmt(r.slope)}, Spearman {fmt(r.spearman)} (no interval: "
              f"{r.n_kinds} architectures)")
        parts.append(f"{FAMILY_LABELS.get(r.family, r.family)}: {r.n} models of "
                     f"{r.n_kinds} architectures, {ci}")
    return replace(base, value=float(cnn.slope), lo=float(cnn.slope_lo), hi=float(cnn.slope_hi),
                   n=int(cnn.n), verdict=verdict, files=_files(results), measured=(
                       "Log10 translation LEE against accuracy inside each family, intervals "
                       "over its architectures: " + "; ".join(parts) + ". Rule: a verdict per "
                       "family from the slope's interval (below 0: reproduced), combined; a "
                       "family of fewer than 3 architectures counts against when its slope is "
                       "not negative."))


@claim("family", source="Figure 1 right", chapter="architectures",
       section="Is the sign stable, and does the family matter beyond accuracy?",
       paper="Whatever the architecture: accuracy predicts LEE better than the family "
             "(CNN, ViT, Mixer) does")
def _family(results: Path, base: Claim) -> Claim:
    z = zoo_analysis(results)
    if len(z["models"]) < 5:
        raise MissingResultsError(f"{len(z['models'])} converged models: the test needs 5 or more")
    g = T.family_test(z["models"])
    verdict = combine_verdicts([verdict_from_interval(g[a]["diff_lo"], g[a]["diff_hi"], 1)
                                for a in ("linear", "log10")])
    lin, lg = g["linear"], g["log10"]
    return replace(base, value=lin["diff"], lo=lin["diff_lo"], hi=lin["diff_hi"], n=lin["n"],
                   verdict=verdict, files=_files(results), measured=(
                       f"R²(LEE ~ accuracy) minus R²(LEE ~ family) over n = {lin['n']} models, "
                       f"{_unit_text(lin['n_kinds'])}: linear axis {fmt_ci(lin['diff'], lin['diff_lo'], lin['diff_hi'])} "
                       f"(accuracy {lin['r2_x']:.2f}, family {lin['r2_family']:.2f}); log axis "
                       f"{fmt_ci(lg['diff'], lg['diff_lo'], lg['diff_hi'])} (accuracy "
                       f"{lg['r2_x']:.2f}, family {lg['r2_family']:.2f}). Rule: reproduced when the "
                       "interval is above 0 on both axes, reversed when below on both."))


@claim("fig1-right-companions", source="Figure 1 right", chapter="architectures",
       section="LEE against accuracy across models (Figure 1, right)",
       paper="The trend is one of equivariance: more accurate models are more equivariant, "
             "not only more confident")
def _fig1_right_companions(results: Path, base: Claim) -> Claim:
    z = zoo_analysis(results)
    c = T.companion_trends(z["models"], z["seeds"])
    comp = c[c["quantity"] != "lee_translate"]
    per = {r.quantity: verdict_from_interval(r.slope_lo, r.slope_hi, -1) for r in comp.itertuples()}
    verdict = combine_verdicts(list(per.values()))
    parts = []
    for r in c.itertuples():
        seeds = (f", {r.seeds_min} to {r.seeds_max} seeds per architecture, hierarchical"
                 if r.unit != "kind" else "")
        tail = f" ({per[r.quantity]})" if r.quantity in per else " (reference)"
        parts.append(f"{r.label} on {r.models}{seeds}: slope "
                     f"{fmt_ci(r.slope, r.slope_lo, r.slope_hi)}, Spearman "
                     f"{fmt_ci(r.spearman, r.spearman_lo, r.spearman_hi)}{tail}")
    missing = [label for col, label in T.COMPANIONS if col not in set(c["quantity"])]
    rho = c.set_index("quantity").loc["rho_translate"]
    return replace(base, value=float(rho.slope), lo=float(rho.slope_lo), hi=float(rho.slope_hi),
                   n=int(rho.n), verdict=verdict, files=_files(results, z["seed_files"][2:]),
                   measured=(
                       "Log10 translation metric against accuracy, intervals over "
                       "architectures: " + "; ".join(parts) + "."
                       + (f" Not measured yet: {'; '.join(missing)} (only the seed runs' "
                          "tables carry them; the seed-0 zoo table does not)." if missing else "")
                       + " Rule: a verdict per companion of raw LEE from its slope's interval "
                       "(below 0: reproduced), combined."))


@claim("confound", source="abstract; Figure 1 right", chapter="architectures",
       section="One factor at a time: training-set size and shift augmentation",
       paper="More accurate models are more equivariant (here: with training-set size held "
             "in the model, since every zoo model trains the same number of steps)")
def _confound(results: Path, base: Claim) -> Claim:
    z = zoo_analysis(results)
    d = T.data_confound(z["models"])
    per, parts = {}, []
    for col, a in d["adjusted"].items():
        per[col] = verdict_from_interval(a["lo"], a["hi"], -1)
        parts.append(f"{'raw LEE' if col.startswith('lee') else 'sensitivity ratio ρ'}: "
                     f"{fmt_ci(a['coef'], a['lo'], a['hi'])} (clustered p = {a['p']:.2g}; naive "
                     f"p = {a['naive_p']:.2g}; without data size {fmt(a['unadjusted'])}; {per[col]})")
    lee = d["adjusted"]["lee_translate"]
    return replace(base, value=lee["coef"], lo=lee["lo"], hi=lee["hi"], n=lee["n"],
                   verdict=combine_verdicts(list(per.values())), files=_files(results), measured=(
                       "Coefficient of accuracy in log10 translation LEE ~ accuracy + log10 "
                       f"training images, n = {lee['n']} converged models, 95% interval from "
                       f"errors clustered by architecture ({lee['n_clusters']}): "
                       + "; ".join(parts) + ". Rule: a verdict per metric from the interval "
                       "(below 0: reproduced), combined."))


def _data_rows(fits: dict[str, dict]) -> tuple[str, list[str]]:
    per = {col: verdict_from_interval(f["slope_lo"], f["slope_hi"], -1) for col, f in fits.items()}
    texts = [f"{'raw LEE' if col.startswith('lee') else 'sensitivity ratio ρ'} "
             f"{fmt_ci(f['slope'], f['slope_lo'], f['slope_hi'], 3)} ({per[col]})"
             for col, f in fits.items()]
    return combine_verdicts(list(per.values())), texts


@claim("data-trend", source="trends with training data", chapter="architectures",
       section="One factor at a time: training-set size and shift augmentation",
       paper="Models trained on more data are more equivariant")
def _data_trend(results: Path, base: Claim) -> Claim:
    z = zoo_analysis(results)
    d = T.data_confound(z["models"])
    rho = T.data_confound(z["models"], "rho_translate")["data"]
    t = d["data"]
    verdict, texts = _data_rows({"lee_translate": t, "rho_translate": rho})
    passes = ", ".join(f"{int(n) // 1000}k images {p:.1f}" for n, p in sorted(d["passes"].items()))
    return replace(base, value=t["slope"], lo=t["slope_lo"], hi=t["slope_hi"], n=t["n"],
                   verdict=verdict, files=_files(results), glued=(("data_slope", t["slope"]),),
                   measured=(
                       f"At equal steps: slope of log10 translation metric per decade of "
                       f"training images, n = {t['n']} small zoo models at 2k, 8k and 60k images, "
                       f"{_unit_text(t['n_clusters'])}: " + "; ".join(texts) + f". Passes over the training set: "
                       f"{passes}, so data size and passes change together (the equal-passes "
                       "row separates them). Rule: a verdict per metric from the slope's "
                       "interval (below 0: reproduced), combined."))


@claim("data-passes", source="trends with training data", chapter="architectures",
       section="One factor at a time: training-set size and shift augmentation",
       paper="Models trained on more data are more equivariant (here at an equal number of "
             "passes over each training set)")
def _data_passes(results: Path, base: Claim) -> Claim:
    models, files = passes_models(results)
    trends = T.passes_trend(models)
    if not trends:
        raise MissingResultsError(
            "the equal-passes runs do not yet hold two data sizes of three or more architectures")
    budget = max(trends)
    b = trends[budget]
    verdict, texts = _data_rows(b["fits"])
    t = b["fits"]["lee_translate"]
    others = "; ".join(f"{p:g} passes: raw LEE {fmt_ci(v['fits']['lee_translate']['slope'], v['fits']['lee_translate']['slope_lo'], v['fits']['lee_translate']['slope_hi'], 3)}"
                       for p, v in trends.items() if p != budget)
    return replace(base, value=t["slope"], lo=t["slope_lo"], hi=t["slope_hi"], n=t["n"],
                   verdict=verdict,
                   files=tuple(rel_paths(results, *[str(Path(f).resolve().relative_to(results.resolve()))
                                                    for f in files])),
                   measured=(
                       f"At {budget:g} passes over each training set: slope of log10 translation "
                       f"metric per decade of training images, n = {b['n_models']} small models "
                       f"of {b['n_kinds']} architectures at {', '.join(str(s) for s in b['sizes'])} "
                       f"images, {b['seeds_min']} to {b['seeds_max']} seeds per architecture, "
                       "intervals over architectures (and seeds within them): " + "; ".join(texts)
                       + (f". Other budgets: {others}" if others else "") + ". Rule: a verdict "
                       "per metric from the slope's interval (below 0: reproduced), combined."))


def _effect_text(e: dict, label: str, verdict: str) -> str:
    return (f"{label} {fmt_ci(e['mean'], e['lo'], e['hi'], 3)} (a factor of "
            f"{10 ** e['mean']:.2f}; {verdict})")


def _kind_row(results: Path, base: Claim, changed: dict, reference: dict, what: str) -> Claim:
    z = zoo_analysis(results)
    per, texts, effects = {}, [], {}
    for col, label in (("lee_translate", "raw LEE"), ("rho_translate", "sensitivity ratio ρ")):
        e = effects[col] = T.kind_effect(z["models"], col, changed, reference)
        per[col] = verdict_from_interval(e["lo"], e["hi"], -1)
        texts.append(_effect_text(e, label, per[col]))
    e = effects["lee_translate"]
    return replace(base, value=e["mean"], lo=e["lo"], hi=e["hi"], n=e["kinds"],
                   verdict=combine_verdicts(list(per.values())), files=_files(results),
                   measured=(
                       f"{what}: mean over n = {e['kinds']} architectures of log10(translation "
                       "metric ratio), bootstrap over architectures: " + "; ".join(texts)
                       + ". Rule: a verdict per metric from the interval (below 0: reproduced), "
                       "combined."))


@claim("shift", source="abstract (augmentations and training data)", chapter="architectures",
       section="One factor at a time: training-set size and shift augmentation",
       paper="Augmentation plays a role in learned equivariance: training with random shifts "
             "lowers translation LEE")
def _shift(results: Path, base: Claim) -> Claim:
    common = {"size": "small", "n_train": 60_000}
    return _kind_row(results, base, {**common, "augment": "shift"}, {**common, "augment": "none"},
                     "Small models at 60k images, shifts of up to 2 px against none")


@claim("small-large", source="abstract", chapter="architectures",
       section="LEE against accuracy across models (Figure 1, right)",
       paper="As models get larger they display more equivariance, regardless of architecture")
def _small_large(results: Path, base: Claim) -> Claim:
    common = {"n_train": 60_000, "augment": "none"}
    return _kind_row(results, base, {**common, "size": "large"}, {**common, "size": "small"},
                     "Large against small variant of each architecture (60k images, no "
                     "augmentation)")


@claim("training", source="title and abstract ('learned equivariance', 'after training')",
       chapter="architectures", section="Along training, and at initialisation",
       paper="Equivariance is learned: after training, models are more equivariant than the "
             "networks training starts from")
def _training(results: Path, base: Claim) -> Claim:
    lee = read_results(results, ZOO_LEE)
    records = read_results(results, ZOO_ACC)
    snap = A.per_model(lee, records)
    if not (snap["step"] == 0).any():
        raise MissingResultsError("the zoo table holds no step-0 snapshot")
    per, texts, effects = {}, [], {}
    for col, label in (("lee_translate", "raw LEE"), ("rho_translate", "sensitivity ratio ρ")):
        e = effects[col] = T.training_effect(snap, col)
        per[col] = verdict_from_interval(e["lo"], e["hi"], -1)
        texts.append(f"{label} {fmt_ci(e['mean'], e['lo'], e['hi'], 3)} (geometric mean factor "
                     f"{10 ** e['mean']:.2f}, median {e['median_ratio']:.2f}; {per[col]})")
    e = effects["lee_translate"]
    return replace(base, value=e["mean"], lo=e["lo"], hi=e["hi"], n=e["n"],
                   verdict=combine_verdicts(list(per.values())), files=_files(results), measured=(
                       f"Mean over n = {e['n']} converged zoo models of log10(trained / "
                       "initialisation) of the translation metric on the same images (step 0 "
                       f"with BatchNorm statistics re-estimated), intervals over the "
                       f"{e['n_kinds']} architectures: " + "; ".join(texts) + ". Softmax LEE "
                       "grows with confidence, which training raises; ρ is its scale-free "
                       "companion. Rule: a verdict per metric from the interval (below 0: "
                       "reproduced), combined."))


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
                       "(two models compared: paired bootstrap over images). Rule: reproduced when the "
                       "interval reaches 1 or below."))


@claim("metrics", source="comparison with sample-based metrics", chapter="architectures",
       section="The sample-based metrics against LEE",
       paper="Sample-based equivariance metrics (EQ-T, shift consistency) agree with LEE")
def _metrics(results: Path, base: Claim) -> Claim:
    from ..stats import cluster_trend

    z = zoo_analysis(results)
    m = z["models"]
    if "eq_t" not in m or m["eq_t"].notna().sum() < 3:
        raise MissingResultsError("EQ-T is measured on fewer than 3 zoo models so far")
    finite = m[np.isfinite(m["eq_t"]) & np.isfinite(m["lee_translate"])]
    t = cluster_trend(finite, "lee_translate", "eq_t", T.UNIT)
    verdict = verdict_from_interval(t["spearman_lo"], t["spearman_hi"], -1)
    return replace(base, value=t["spearman"], lo=t["spearman_lo"], hi=t["spearman_hi"],
                   n=int(t["n"]), verdict=verdict, files=rel_paths(results, ZOO_LEE),
                   glued=(("rho_eq_t", t["spearman"]),),
                   measured=(
                       f"Spearman ρ of EQ-T (dB) with translation LEE across models "
                       f"{fmt_ci(t['spearman'], t['spearman_lo'], t['spearman_hi'])}, "
                       f"n = {int(t['n'])} models, {_unit_text(t['n_clusters'])}. Rule: reproduced when the "
                       "interval is below 0 (agreement), reversed when above."))
