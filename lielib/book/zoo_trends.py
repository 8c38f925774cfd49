"""The zoo's trends with the architecture as the unit of evidence.

The zoo's 50 models are ten architectures (``kind``) in five variants that share a recipe,
one seed each: they are not 50 independent draws. Every interval here resamples the
architectures (:func:`lielib.book.stats.cluster_bootstrap`), and where seed runs exist,
the seeds within each architecture as well (a hierarchical bootstrap), or fits a mixed
model with a random intercept per architecture; each result says which, and on how many
architectures and seeds it rests.

- :func:`fig1_right`: LEE against accuracy on the paper's linear axis and on the log axis,
  the mixed model, and leave-one-model-out and leave-one-family-out;
- :func:`within_family`: the same fit inside each family (CNN, ViT, Mixer);
- :func:`family_test`: does the family add to accuracy (mixed model, Wald test)?
- :func:`companion_trends`: the trend on the scale-free ratio and, where the seed runs
  carry them, on logit LEE and central-stencil LEE;
- :func:`seed_trend`: the trend across the ten seeded architectures, hierarchical;
- :func:`data_confound`: data size at equal steps beside each model's passes, and the
  accuracy trend with log data size in the model;
- :func:`passes_trend`: data size at equal passes (the equal-passes runs);
- :func:`kind_effect`: one factor (shift augmentation, size) within each architecture,
  averaged over architectures;
- :func:`training_effect`: LEE after training over LEE at initialisation.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from . import stats

__all__ = ["COMPANIONS", "UNIT", "companion_trends", "data_confound", "family_test",
           "fig1_right", "kind_effect", "passes_trend", "seed_trend", "training_effect",
           "within_family"]

UNIT = "kind"
"""The column naming a model's architecture: the independent unit."""
COMPANIONS = (("rho_translate", "sensitivity ratio ρ (softmax, paper's stencil)"),
              ("lee_logits_translate", "logit LEE (paper's stencil)"),
              ("lee_central_translate", "softmax LEE, central stencil"),
              ("lee_logits_central_translate", "logit LEE, central stencil"))
"""The trend's companions: (column, label). ``rho`` is in every table; the others only in
the tables of the seed runs."""


def _converged(models: pd.DataFrame) -> pd.DataFrame:
    use = models[models["converged"].astype(bool)] if "converged" in models else models
    return use.reset_index(drop=True)


def fig1_right(models: pd.DataFrame, column: str = "lee_translate", *, x: str = "accuracy",
               seed: int = 0, n_resamples: int = stats.N_RESAMPLES) -> dict[str, Any]:
    """LEE against accuracy across the converged models, intervals over architectures.

    Returns ``fits`` (per axis, :func:`lielib.book.stats.cluster_trend`), ``mixed`` (per
    axis, :func:`lielib.book.stats.mixed_slope`), ``loo_model`` and ``loo_family`` (per
    axis, :func:`lielib.book.stats.leave_one_out`: the slope with each model or family
    left out), and ``without_top``: the linear fit without the model whose removal moves
    the slope most, with its interval over architectures.
    """
    use = _converged(models)
    out: dict[str, Any] = {"fits": {}, "mixed": {}, "loo_model": {}, "loo_family": {}}
    for axis, log_y in (("linear", False), ("log10", True)):
        out["fits"][axis] = stats.cluster_trend(use, x, column, UNIT, log_y=log_y, seed=seed,
                                                n_resamples=n_resamples)
        out["mixed"][axis] = stats.mixed_slope(use, x, column, UNIT, log_y=log_y)
        loo = stats.leave_one_out(use, x, column, log_y=log_y)
        out["loo_model"][axis] = loo.assign(left_out=use.loc[loo["left_out"], "model"].to_numpy())
        out["loo_family"][axis] = stats.leave_one_out(use, x, column, by="family", log_y=log_y)
    loo = out["loo_model"]["linear"]
    top = loo.loc[(loo["slope"] - out["fits"]["linear"]["slope"]).abs().idxmax(), "left_out"]
    rest = use[use["model"] != top]
    out["without_top"] = {"model": top, **stats.cluster_trend(
        rest, x, column, UNIT, seed=seed, n_resamples=n_resamples)}
    return out


def within_family(models: pd.DataFrame, column: str = "lee_translate", *, x: str = "accuracy",
                  seed: int = 0, n_resamples: int = stats.N_RESAMPLES) -> pd.DataFrame:
    """The fit inside each family, log axis: slope and Spearman, intervals over architectures.

    A family with fewer than 3 architectures gets its point estimates and no interval
    (``NaN``): resampling two architectures says nothing.
    """
    rows = []
    for family, part in _converged(models).groupby("family", sort=True):
        row = {"family": family, "n": len(part), "n_kinds": part[UNIT].nunique()}
        if row["n_kinds"] >= 3:
            fit = stats.cluster_trend(part, x, column, UNIT, log_y=True, seed=seed,
                                      n_resamples=n_resamples)
        else:
            from scipy.stats import linregress, spearmanr

            ok = part[part[column] > 0]
            line = linregress(ok[x], np.log10(ok[column]))
            fit = {"slope": line.slope, "r2": line.rvalue**2,
                   "spearman": spearmanr(ok[x], ok[column]).statistic}
            fit |= {f"{k}_{e}": np.nan for k in ("slope", "spearman") for e in ("lo", "hi")}
        rows.append(row | {k: fit[k] for k in ("slope", "slope_lo", "slope_hi", "spearman",
                                                "spearman_lo", "spearman_hi", "r2")})
    return pd.DataFrame(rows)


def family_test(models: pd.DataFrame, column: str = "lee_translate", *, x: str = "accuracy",
                seed: int = 0, n_resamples: int = stats.N_RESAMPLES) -> dict[str, dict[str, float]]:
    """Does accuracy predict LEE better than the family does? Per axis, over architectures.

    ``diff = R^2(y ~ x) - R^2(y ~ C(family))`` across the converged models (``y`` raw or
    ``log10``), with its interval over architectures; the two R^2 with theirs.
    """
    import statsmodels.api as sm
    from scipy.stats import linregress

    use = _converged(models)
    use = use[use[column] > 0].reset_index(drop=True)
    xs = use[x].to_numpy(float)
    ys = {"linear": use[column].to_numpy(float), "log10": np.log10(use[column].to_numpy(float))}
    dummies = pd.get_dummies(use["family"], drop_first=False).to_numpy(float)

    def statistic(rows: np.ndarray) -> np.ndarray:
        out = []
        for axis in ("linear", "log10"):
            y = ys[axis][rows]
            if np.ptp(xs[rows]) == 0 or np.ptp(y) == 0:
                return np.full(6, np.nan)
            r2x = linregress(xs[rows], y).rvalue ** 2
            groups = dummies[rows][:, dummies[rows].any(axis=0)]  # the families drawn
            r2g = sm.OLS(y, groups).fit().rsquared if groups.shape[1] > 1 else 0.0
            out += [r2x - r2g, r2x, r2g]
        return np.asarray(out)

    boot = stats.cluster_bootstrap(use, statistic, UNIT, seed=seed, n_resamples=n_resamples)
    out = {}
    for i, axis in enumerate(("linear", "log10")):
        out[axis] = {name: float(boot[key][3 * i + j]) for j, name in
                     enumerate(("diff", "r2_x", "r2_family")) for key in ("estimate",)}
        out[axis] |= {f"{name}_{e}": float(boot[e][3 * i + j]) for j, name in
                      enumerate(("diff", "r2_x", "r2_family")) for e in ("lo", "hi")}
        out[axis] |= {"n": len(use), "n_kinds": boot["n_clusters"]}
    return out


def companion_trends(zoo: pd.DataFrame, seeds: pd.DataFrame, *, x: str = "accuracy",
                     seed: int = 0, n_resamples: int = stats.N_RESAMPLES) -> pd.DataFrame:
    """The accuracy trend on each companion of raw LEE, log axis, on the models that have it.

    ``rho_translate`` on the converged zoo models (intervals over architectures); the logit
    and central-stencil columns on the seed runs' models that carry them (hierarchical:
    architectures, then seeds), beside raw LEE on exactly those models. ``models`` says
    which models each row rests on.
    """
    rows = []
    zoo = _converged(zoo)

    def add(frame: pd.DataFrame, column: str, label: str, models: str, within: str | None) -> None:
        part = frame.dropna(subset=[column])
        if part[UNIT].nunique() < 3:
            return
        fit = stats.cluster_trend(part, x, column, UNIT, within=within, log_y=True, seed=seed,
                                  n_resamples=n_resamples)
        seeds_per = part.groupby(UNIT)["train_seed"].nunique() if "train_seed" in part else None
        rows.append({"quantity": column, "label": label, "models": models, **fit,
                     "seeds_min": int(seeds_per.min()) if seeds_per is not None else 1,
                     "seeds_max": int(seeds_per.max()) if seeds_per is not None else 1})

    add(zoo, "lee_translate", "softmax LEE (paper's stencil)",
        f"{len(zoo)} converged zoo models, seed 0", None)
    add(zoo, "rho_translate", COMPANIONS[0][1], f"{len(zoo)} converged zoo models, seed 0", None)
    seeds = _converged(seeds)
    have = [c for c, _ in COMPANIONS[1:] if c in seeds and seeds[c].notna().any()]
    if have:
        sub = seeds.dropna(subset=have)
        desc = (f"{len(sub)} seed-run models (small, 60k images, seeds "
                f"{', '.join(str(s) for s in sorted(sub['train_seed'].unique()))})")
        add(sub, "lee_translate", "softmax LEE (paper's stencil), same models", desc, "train_seed")
        for column, label in COMPANIONS[1:]:
            if column in have:
                add(sub, column, label, desc, "train_seed")
    return pd.DataFrame(rows)


def seed_trend(seeds: pd.DataFrame, column: str = "lee_translate", *, x: str = "accuracy",
               seed: int = 0, n_resamples: int = stats.N_RESAMPLES) -> dict[str, Any]:
    """The trend across the ten seeded architectures, per axis, hierarchical bootstrap.

    ``seeds`` is :func:`lielib.book.zoo_runs.seed_models`. Returns per axis the fit with
    ``units_min``/``units_max`` (the seeds per architecture), and the seeds found.
    """
    use = _converged(seeds)
    out: dict[str, Any] = {"seeds": sorted(int(s) for s in use["train_seed"].unique())}
    for axis, log_y in (("linear", False), ("log10", True)):
        out[axis] = stats.cluster_trend(use, x, column, UNIT, within="train_seed", log_y=log_y,
                                        seed=seed, n_resamples=n_resamples)
    return out


def data_confound(models: pd.DataFrame, column: str = "lee_translate", *, seed: int = 0,
                  n_resamples: int = stats.N_RESAMPLES) -> dict[str, Any]:
    """Data size at equal steps, and accuracy with data size in the model.

    ``data``: slope of ``log10 column`` against ``log10 n_train`` over the small models
    without augmentation (2k, 8k, 60k images), intervals over architectures; ``passes``:
    the passes over its training set each condition made (median over models);
    ``adjusted``: per ``lee``/``rho`` column, the accuracy coefficient of
    ``log10 y ~ accuracy + log10 n_train`` over all converged models with errors
    clustered by architecture (:func:`lielib.book.stats.adjusted_slope`).
    """
    use = _converged(models).assign(log_n=lambda d: np.log10(d["n_train"].astype(float)))
    plain = use[(use["size"] == "small") & (use["augment"] == "none")]
    out: dict[str, Any] = {
        "data": stats.cluster_trend(plain, "log_n", column, UNIT, log_y=True, seed=seed,
                                    n_resamples=n_resamples),
        "passes": plain.groupby("n_train")["passes"].median().to_dict(),
        "adjusted": {}}
    for col in (column, column.replace("lee_", "rho_", 1)):
        if col in use:
            out["adjusted"][col] = stats.adjusted_slope(use, "accuracy", col, ["log_n"], UNIT,
                                                        log_y=True)
    return out


def passes_trend(models: pd.DataFrame, column: str = "lee_translate", *, seed: int = 0,
                 n_resamples: int = stats.N_RESAMPLES) -> dict[str, Any]:
    """Data size at equal passes: ``log10 column`` against ``log10 n_train`` per run.

    ``models`` is :func:`lielib.book.zoo_runs.passes_models`. Returns, per number of passes
    ``P``, the fit with intervals over architectures (and seeds within them when a run has
    several), its raw and scale-free companions (``rho`` when present).
    """
    use = _converged(models).assign(log_n=lambda d: np.log10(d["n_train"].astype(float)))
    use["budget"] = use["run"].str.extract(r"passes([0-9.]+)-seed", expand=False).astype(float)
    out = {}
    for budget, part in use.groupby("budget", sort=True):
        if part["n_train"].nunique() < 2 or part[UNIT].nunique() < 3:
            continue
        within = "train_seed" if part["train_seed"].nunique() > 1 else None
        fits = {col: stats.cluster_trend(part, "log_n", col, UNIT, within=within, log_y=True,
                                         seed=seed, n_resamples=n_resamples)
                for col in (column, column.replace("lee_", "rho_", 1)) if col in part}
        seeds = part.groupby(UNIT)["train_seed"].nunique()
        out[float(budget)] = {"fits": fits, "n_models": len(part), "n_kinds": part[UNIT].nunique(),
                              "seeds_min": int(seeds.min()), "seeds_max": int(seeds.max()),
                              "sizes": sorted(int(n) for n in part["n_train"].unique())}
    return out


def kind_effect(models: pd.DataFrame, column: str, changed: dict[str, Any],
                reference: dict[str, Any], *, seed: int = 0,
                n_resamples: int = stats.N_RESAMPLES) -> dict[str, Any]:
    """One factor within each architecture: mean over kinds of ``log10(changed / reference)``.

    ``changed`` and ``reference`` select one model per kind by column values (e.g.
    ``{"augment": "shift"}`` against ``{"augment": "none"}``, both at ``size="small"`` and
    60k images). The mean has a bootstrap interval over kinds (the kinds are independent).
    """
    use = _converged(models)

    def pick(sel: dict[str, Any]) -> pd.Series:
        mask = np.logical_and.reduce([use[k] == v for k, v in sel.items()])
        part = use[mask]
        if part[UNIT].duplicated().any():
            raise ValueError(f"{sel} selects more than one model of a kind")
        return part.set_index(UNIT)[column]

    a, b = pick(changed), pick(reference)
    kinds = a.index.intersection(b.index)
    if len(kinds) < 3:
        raise ValueError(f"only {len(kinds)} kinds have both models")
    logs = np.log10(a[kinds] / b[kinds])
    return {**stats.mean_ci(logs, seed=seed, n_resamples=n_resamples), "kinds": len(kinds),
            "per_kind": logs.to_dict()}


def training_effect(snapshots: pd.DataFrame, column: str, *, seed: int = 0,
                    n_resamples: int = stats.N_RESAMPLES) -> dict[str, Any]:
    """LEE after training over LEE at initialisation, across models, over architectures.

    ``snapshots`` is :func:`lielib.book.architectures.per_model` of the zoo (every
    snapshot). Per converged model ``log10(trained / init)`` of the mean over the same
    images (step 0 with BatchNorm statistics re-estimated); their mean with an interval
    over architectures. Models whose value at initialisation is 0 have no ratio and are
    counted in ``n_zero_init``.
    """
    snaps = snapshots[snapshots["converged"].astype(bool)] if "converged" in snapshots else snapshots
    init = snaps[snaps["step"] == 0].set_index("model")[column]
    final = snaps[snaps["final"].astype(bool)].set_index("model")
    both = final.loc[final.index.intersection(init.index)]
    ratio = both[column] / init[both.index]
    ok = np.isfinite(np.log10(ratio)) & (init[both.index] > 0)
    frame = pd.DataFrame({"log_ratio": np.log10(ratio[ok]), UNIT: both.loc[ok, UNIT]})
    boot = stats.cluster_bootstrap(frame, lambda r: frame["log_ratio"].to_numpy()[r].mean(), UNIT,
                                   seed=seed, n_resamples=n_resamples)
    return {"mean": boot["estimate"], "lo": boot["lo"], "hi": boot["hi"], "n": len(frame),
            "n_kinds": boot["n_clusters"], "median_ratio": float(ratio[ok].median()),
            "n_zero_init": int((~ok).sum())}
