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

import pandas as pd

from . import stats

__all__ = ["FACTORS", "per_model", "stability", "training_change", "trends"]

FACTORS = ("model", "family", "kind", "size", "n_train", "augment", "condition", "converged")
"""The columns that describe a zoo model (one factor varied at a time)."""


def _lee_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if c.startswith(("lee_", "rho_"))]


def per_model(lee: pd.DataFrame, records: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per model and snapshot: mean over images of every ``lee_*`` and ``rho_*`` column.

    Adds ``lee_translate`` and ``rho_translate`` (the mean of x and y; the paper's Figure 1
    right averages the two translations) and the median
    of the sample-based metrics where present. With ``records`` (the zoo's accuracy table),
    the trained snapshot's accuracy is replaced by the one on all 10,000 test images.
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
