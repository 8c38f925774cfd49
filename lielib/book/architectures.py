"""The architecture chapter's analysis of the trained zoo: tidy tables in, tidy tables out.

Inputs are the committed results of :mod:`lielib.book.zoo_train` (``results/zoo/accuracy.csv``:
one row per trained model with its factors and convergence) and of
:mod:`lielib.book.zoo_measure` (``results/architectures/zoo-lee.csv``: per model, snapshot
step and image, ``lee_<action>`` and, at the trained snapshot, the sample-based metrics).

- :func:`per_model`: one row per model and snapshot, LEE averaged over the same images;
- :func:`trends`: LEE against accuracy across converged models, per action, on the paper's
  linear axis and on the log axis, with bootstrap intervals over models;
- :func:`stability`: the sign of the translation trend with each model or family left out,
  and whether the family adds to accuracy as a predictor (nested F test);
- :func:`training_change`: per model, the ratio of LEE after training to LEE at
  initialisation (BatchNorm statistics re-estimated) on the same images, paired bootstrap.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import stats

__all__ = ["FACTORS", "METRIC_PAIRS", "best_ratio", "factor_effects", "metric_agreement", "per_model",
           "stability", "training_change", "trends"]

FACTORS = ("model", "family", "kind", "size", "n_train", "augment", "condition", "converged")
"""The columns that describe a zoo model (one factor varied at a time)."""


def _lee_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if c.startswith(("lee_", "rho_"))]


def per_model(lee: pd.DataFrame, records: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per model and snapshot: mean over images of every ``lee_*`` and ``rho_*`` column.

    Adds ``lee_translate`` and ``rho_translate`` (the mean of x and y; the paper's Figure 1
    right averages the two translations) and the median
    of the sample-based metrics where present. With ``records`` (the zoo's accuracy table),
    the trained snapshot's accuracy is replaced by the one on all 10,000 test images, and
    the convergence flag by the records' (the criterion of the current code).
    """
    keys = [c for c in (*FACTORS, "arch", "params", "step", "final", "accuracy") if c in lee]
    lee_cols = _lee_columns(lee)
    metric_cols = [c for c in ("consistency", "eq_t", "eq_t_frac", "eq_r", "fd_translate_x",
                               "fd_rotate") if c in lee]
    grouped = lee.groupby(keys, sort=False, dropna=False)
    out = grouped[lee_cols].mean()
    if metric_cols:
        out = out.join(grouped[metric_cols].median())
    out = out.join(grouped.size().rename("n_images")).reset_index()
    for kind in ("lee", "rho"):
        if {f"{kind}_translate_x", f"{kind}_translate_y"} <= set(out.columns):
            out[f"{kind}_translate"] = (out[f"{kind}_translate_x"] + out[f"{kind}_translate_y"]) / 2
    if records is not None and "converged" in records and "converged" in out:
        out["converged"] = out["model"].map(records.set_index("name")["converged"]).astype(bool)
    if records is not None and "final" in out:
        full = records.set_index("name")["test_acc"]
        final = out["final"].astype(bool)
        out.loc[final, "accuracy"] = out.loc[final, "model"].map(full).to_numpy()
    return out


def trends(models: pd.DataFrame, columns: list[str], *, x: str = "accuracy", seed: int = 0,
           n_resamples: int = stats.N_RESAMPLES) -> pd.DataFrame:
    """Slope, R^2 and Spearman (with 95% intervals) of each column against ``x``, both axes.

    Only converged models enter (the column ``converged`` when present).
    """
    use = models[models["converged"].astype(bool)] if "converged" in models else models
    rows = []
    for col in columns:
        for log_y in (False, True):
            fit = stats.trend(use[x], use[col], log_y=log_y, seed=seed, n_resamples=n_resamples)
            rows.append({"quantity": col, **fit})
    return pd.DataFrame(rows)


def stability(models: pd.DataFrame, column: str, *, x: str = "accuracy") -> dict[str, object]:
    """Is the sign of ``column``'s trend against ``x`` stable, and does the family add to ``x``?

    Returns the leave-one-model-out and leave-one-family-out tables (log axis, the axis on
    which LEE's spread across models is modelled), the fraction of each that keeps the
    all-model sign, and the nested F tests on both axes.
    """
    use = models[models["converged"].astype(bool)] if "converged" in models else models
    use = use.reset_index(drop=True)
    loo_model = stats.leave_one_out(use, x, column, log_y=True)
    loo_family = stats.leave_one_out(use, x, column, by="family", log_y=True)
    return {
        "loo_model": loo_model,
        "loo_family": loo_family,
        "model_same_sign": float(loo_model["same_sign"].mean()),
        "family_same_sign": float(loo_family["same_sign"].mean()) if len(loo_family) else float("nan"),
        "family_linear": stats.group_adds(use, x, column, "family"),
        "family_log": stats.group_adds(use, x, column, "family", log_y=True),
    }


def training_change(lee: pd.DataFrame, column: str, *, seed: int = 0,
                    n_resamples: int = stats.N_RESAMPLES) -> pd.DataFrame:
    """Per model: LEE after training / LEE at initialisation on the same images.

    ``ratio = mean_images(trained) / mean_images(step 0)`` with a paired bootstrap interval
    over images; step 0 is the function training starts from (BatchNorm statistics
    re-estimated on training images). Models whose LEE at initialisation is exactly 0 on
    every image (constant functions) get no ratio.
    """
    rows = []
    for model, group in lee.groupby("model", sort=False):
        start = group[group["step"] == 0].sort_values("image")
        end = group[group["final"].astype(bool)].sort_values("image")
        if start.empty or end.empty:
            continue
        row = {"model": model, "family": end["family"].iloc[0],
               "init": float(start[column].mean()), "trained": float(end[column].mean()),
               "acc_init": float(start["accuracy"].iloc[0]),
               "acc_trained": float(end["accuracy"].iloc[0])}
        if (start[column] > 0).any():
            r = stats.ratio_ci(end[column].to_numpy(), start[column].to_numpy(), seed=seed,
                               n_resamples=n_resamples)
            row |= {"ratio": r["ratio"], "ratio_lo": r["lo"], "ratio_hi": r["hi"], "n": r["n"]}
        rows.append(row)
    return pd.DataFrame(rows)


def best_ratio(lee: pd.DataFrame, models: pd.DataFrame, family: str, reference: str,
               column: str = "lee_translate", *, seed: int = 0,
               n_resamples: int = stats.N_RESAMPLES) -> dict[str, object]:
    """The most equivariant model of ``family`` against that of ``reference``, same images.

    ``ratio = mean_images(best of family) / mean_images(best of reference)`` at the trained
    snapshot, with a paired bootstrap interval over images; "best" is the lowest per-model
    mean of ``column`` among ``models`` (converged models only, when flagged).
    """
    use = models[models["converged"].astype(bool)] if "converged" in models else models
    best = {}
    for fam in (family, reference):
        part = use[use["family"] == fam]
        if part.empty:
            raise ValueError(f"no model of family {fam!r} among the models given")
        best[fam] = part.sort_values(column)["model"].iloc[0]
    final = lee[lee["final"].astype(bool)]
    per = {}
    for fam, model in best.items():
        rows = final[final["model"] == model].set_index("image")
        per[fam] = (rows[["lee_translate_x", "lee_translate_y"]].mean(axis=1)
                    if column == "lee_translate" else rows[column])
    both = pd.concat(per, axis=1).dropna()
    r = stats.ratio_ci(both[family].to_numpy(), both[reference].to_numpy(), seed=seed,
                       n_resamples=n_resamples)
    return {**r, "best": best[family], "best_reference": best[reference]}


METRIC_PAIRS = (("consistency", "lee_translate", "shift consistency"),
                ("eq_t", "lee_translate", "EQ-T"), ("eq_r", "lee_rotate", "EQ-R"),
                ("fd_translate_x", "lee_translate_x", "finite-difference, x shift"),
                ("fd_rotate", "lee_rotate", "finite-difference, rotation"))
"""(sample-based metric, the LEE it estimates, label): agreement is rho < 0 for consistency
and the PSNRs, rho > 0 for the finite-difference rates."""


def metric_agreement(models: pd.DataFrame, *, seed: int = 0,
                     n_resamples: int = stats.N_RESAMPLES) -> pd.DataFrame:
    """Spearman's rho of each sample-based metric with its LEE across models, with intervals."""
    use = models[models["converged"].astype(bool)] if "converged" in models else models
    rows = []
    for metric, col, label in METRIC_PAIRS:
        if metric not in use or col not in use:
            continue
        finite = use[np.isfinite(use[metric]) & np.isfinite(use[col])]
        if len(finite) < 3 or finite[metric].nunique() < 2:
            continue
        t = stats.trend(finite[col], finite[metric], seed=seed, n_resamples=n_resamples)
        rows.append({"metric": metric, "label": label, "against": col, "spearman": t["spearman"],
                     "spearman_lo": t["spearman_lo"], "spearman_hi": t["spearman_hi"], "n": t["n"]})
    return pd.DataFrame(rows)


def factor_effects(models: pd.DataFrame, column: str = "lee_translate", *, seed: int = 0,
                   n_resamples: int = stats.N_RESAMPLES) -> dict[str, dict[str, float]]:
    """The one-factor-at-a-time effects on the small models, across kinds.

    ``data``: the slope of ``log10 column`` against ``log10 n_train`` (2k, 8k, 60k images,
    no augmentation), a bootstrap over models. ``shift``: the mean over kinds of
    ``log10(column with shift / column without)`` at 60k images, a bootstrap over kinds.
    """
    use = models[models["converged"].astype(bool)] if "converged" in models else models
    small = use[use["size"] == "small"]
    plain = small[small["augment"] == "none"]
    out: dict[str, dict[str, float]] = {}
    if plain["n_train"].nunique() >= 2 and len(plain) >= 3:
        out["data"] = stats.trend(np.log10(plain["n_train"].astype(float)), plain[column],
                                  log_y=True, seed=seed, n_resamples=n_resamples)
    base = plain[plain["n_train"] == plain["n_train"].max()].set_index("kind")[column]
    shifted = small[small["augment"] == "shift"].set_index("kind")[column]
    kinds = base.index.intersection(shifted.index)
    if len(kinds) >= 2:
        logs = np.log10(shifted[kinds] / base[kinds])
        out["shift"] = {**stats.mean_ci(logs, seed=seed, n_resamples=n_resamples),
                        "kinds": len(kinds)}
    return out
