"""The book's statistics, from scipy and statsmodels: trends with intervals, and their stability.

- :func:`mean_ci`: a mean over images (or models) with a bootstrap 95% interval;
- :func:`ratio_ci`: the ratio of two means over the same images, with a paired bootstrap
  interval;
- :func:`trend`: slope, R^2 and Spearman's rho of ``y`` against ``x`` (``y`` on the paper's
  linear axis or on a log axis), each with a bootstrap 95% interval over the points;
- :func:`leave_one_out`: the slope and Spearman's rho with each point, or each group (a
  family), left out: is the sign stable?
- :func:`group_adds`: does a grouping (the architecture family) explain ``y`` beyond
  ``x``? The F test of ``y ~ x + C(group)`` against ``y ~ x`` (statsmodels).

Bootstrap intervals are percentile intervals (``scipy.stats.bootstrap``) from a seeded
``numpy`` generator; ``n_resamples`` defaults to 2,000.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["group_adds", "leave_one_out", "mean_ci", "ratio_ci", "trend"]

N_RESAMPLES = 2000


def _clean(x: Any, y: Any, log_y: bool) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and y must be 1-d and of the same length, got {x.shape} and {y.shape}")
    keep = np.isfinite(x) & np.isfinite(y) & ((y > 0) if log_y else True)
    x, y = x[keep], y[keep]
    return x, (np.log10(y) if log_y else y)


def mean_ci(values: Any, *, seed: int = 0, n_resamples: int = N_RESAMPLES,
            confidence: float = 0.95) -> dict[str, float]:
    """``{"mean", "lo", "hi", "n"}``: the mean of ``values`` and its bootstrap interval."""
    from scipy.stats import bootstrap

    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        raise ValueError("no finite values to average")
    if len(v) == 1 or np.all(v == v[0]):
        return {"mean": float(v.mean()), "lo": float(v[0]), "hi": float(v[0]), "n": len(v)}
    res = bootstrap((v,), np.mean, n_resamples=n_resamples, confidence_level=confidence,
                    method="percentile", rng=np.random.default_rng(seed))
    ci = res.confidence_interval
    return {"mean": float(v.mean()), "lo": float(ci.low), "hi": float(ci.high), "n": len(v)}


def ratio_ci(a: Any, b: Any, *, seed: int = 0, n_resamples: int = N_RESAMPLES,
             confidence: float = 0.95) -> dict[str, float]:
    """``mean(a) / mean(b)`` over paired samples, with a paired bootstrap interval."""
    from scipy.stats import bootstrap

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise ValueError(f"need two paired 1-d samples of length >= 2, got {a.shape}, {b.shape}")
    res = bootstrap((a, b), lambda u, v, axis=-1: u.mean(axis) / v.mean(axis), paired=True,
                    n_resamples=n_resamples, confidence_level=confidence,
                    method="percentile", rng=np.random.default_rng(seed))
    ci = res.confidence_interval
    return {"ratio": float(a.mean() / b.mean()), "lo": float(ci.low), "hi": float(ci.high),
            "n": len(a)}


def _fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float]:
    from scipy.stats import linregress, spearmanr

    fit = linregress(x, y)
    return fit.slope, fit.intercept, fit.rvalue**2, spearmanr(x, y).statistic


def trend(x: Any, y: Any, *, log_y: bool = False, seed: int = 0,
          n_resamples: int = N_RESAMPLES, confidence: float = 0.95) -> dict[str, float]:
    """Least squares ``y = a + b x`` (or ``log10 y``), R^2 and Spearman, with intervals.

    Points with a missing ``x`` or ``y`` (or ``y <= 0`` on the log axis) are dropped.
    Returns ``slope``, ``intercept``, ``r2``, ``spearman``, each interval as
    ``<name>_lo`` / ``<name>_hi`` (a bootstrap over points, pairs resampled together; the
    few resamples with a constant ``x`` or ``y`` have no fit and are left out, counted in
    ``n_degenerate``), and ``n``; Spearman's rho is the same on both axes (ranks do not change under log).
    """
    from scipy.stats import DegenerateDataWarning, bootstrap

    x, y = _clean(x, y, log_y)
    if len(x) < 3:
        raise ValueError(f"a trend needs at least 3 points, got {len(x)}")
    slope, intercept, r2, rho = _fit(x, y)
    out = {"slope": slope, "intercept": intercept, "r2": r2, "spearman": rho, "n": len(x),
           "axis": "log10" if log_y else "linear"}
    names = ("slope", "intercept", "r2", "spearman")

    def stat(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        if np.ptp(u) == 0 or np.ptp(v) == 0:
            return np.full(4, np.nan)
        return np.asarray(_fit(u, v))

    with warnings.catch_warnings():
        # a resample whose x (or y) is constant has no fit: it is dropped below
        warnings.simplefilter("ignore", DegenerateDataWarning)
        res = bootstrap((x, y), stat, paired=True, vectorized=False, n_resamples=n_resamples,
                        confidence_level=confidence, method="percentile",
                        rng=np.random.default_rng(seed))
    alpha = 100 * (1 - confidence) / 2
    lo, hi = np.nanpercentile(res.bootstrap_distribution, [alpha, 100 - alpha], axis=-1)
    for name, a, b in zip(names, lo, hi, strict=True):
        out[f"{name}_lo"], out[f"{name}_hi"] = float(a), float(b)
    out["n_degenerate"] = int(np.isnan(res.bootstrap_distribution[0]).sum())
    return out


def leave_one_out(frame: pd.DataFrame, x: str, y: str, *, by: str | None = None,
                  log_y: bool = False) -> pd.DataFrame:
    """The fit with each row (``by=None``) or each value of column ``by`` left out.

    Returns one row per left-out unit: ``left_out``, ``n``, ``slope``, ``spearman``, and
    ``same_sign`` (the slope's sign agrees with the fit on all points).
    """
    xs, ys = _clean(frame[x], frame[y], log_y)
    full_slope = _fit(xs, ys)[0]
    units: Sequence[Any] = frame.index.tolist() if by is None else sorted(frame[by].unique())
    rows = []
    for unit in units:
        rest = frame.drop(index=unit) if by is None else frame[frame[by] != unit]
        u, v = _clean(rest[x], rest[y], log_y)
        if len(u) < 3:
            continue
        slope, _, _, rho = _fit(u, v)
        rows.append({"left_out": unit, "n": len(u), "slope": slope, "spearman": rho,
                     "same_sign": bool(np.sign(slope) == np.sign(full_slope))})
    return pd.DataFrame(rows)


def group_adds(frame: pd.DataFrame, x: str, y: str, group: str, *, log_y: bool = False
               ) -> dict[str, float]:
    """Does ``group`` explain ``y`` beyond ``x``? Nested OLS models and their F test.

    Fits ``y ~ x`` and ``y ~ x + C(group)`` (``log10 y`` on the log axis) and returns the
    F statistic, its p-value, the two R^2 and the degrees of freedom added.
    """
    import statsmodels.formula.api as smf
    from statsmodels.stats.anova import anova_lm

    data = pd.DataFrame({"x": frame[x].astype(float), "y": frame[y].astype(float),
                         "g": frame[group].astype(str)})
    data = data[np.isfinite(data["x"]) & np.isfinite(data["y"])]
    if log_y:
        data = data[data["y"] > 0].assign(y=lambda d: np.log10(d["y"]))
    if data["g"].nunique() < 2 or len(data) <= data["g"].nunique() + 2:
        raise ValueError(f"need at least two groups and more points than parameters, got "
                         f"{data['g'].nunique()} groups and {len(data)} points")
    small = smf.ols("y ~ x", data).fit()
    large = smf.ols("y ~ x + C(g)", data).fit()
    table = anova_lm(small, large)
    return {"f": float(table["F"].iloc[1]), "p": float(table["Pr(>F)"].iloc[1]),
            "r2_x": float(small.rsquared), "r2_x_group": float(large.rsquared),
            "df_added": int(table["df_diff"].iloc[1]), "n": len(data),
            "axis": "log10" if log_y else "linear"}
