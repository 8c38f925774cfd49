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

Models that share an architecture (and its recipe) are not independent, so the intervals
across models resample the independent unit:

- :func:`cluster_bootstrap`: any statistic of the rows, resampling clusters (architectures)
  and, optionally, units within each drawn cluster (training seeds): a hierarchical
  bootstrap;
- :func:`cluster_trend`: :func:`trend` with its intervals over clusters;
- :func:`mixed_slope`: the slope of a mixed model with a random intercept per cluster
  (``statsmodels`` ``MixedLM``), with its Wald interval;
- :func:`adjusted_slope`: the coefficient of ``x`` in ``y ~ x + controls`` (OLS) with
  standard errors clustered by architecture, beside the naive ones.

Bootstrap intervals are percentile intervals (``scipy.stats.bootstrap``) from a seeded
``numpy`` generator; ``n_resamples`` defaults to 2,000.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["adjusted_slope", "cluster_bootstrap", "cluster_trend", "group_adds", "leave_one_out",
           "mean_ci", "mixed_slope", "ratio_ci", "trend"]

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


# ------------------------------------------------------------ the independent unit


def cluster_bootstrap(frame: pd.DataFrame, statistic: Callable[[np.ndarray], Any], cluster: str,
                      *, within: str | None = None, seed: int = 0,
                      n_resamples: int = N_RESAMPLES, confidence: float = 0.95
                      ) -> dict[str, Any]:
    """A statistic of the rows of ``frame`` with percentile intervals over clusters.

    ``scipy.stats.bootstrap`` resamples the cluster ids (the values of column ``cluster``)
    with replacement; the statistic receives the positions (``iloc``) of every row of
    the drawn clusters, a cluster drawn twice contributing its rows twice. With ``within``,
    each drawn cluster's units (the values of column ``within``, e.g. the training seed)
    are resampled in turn, from a generator seeded with ``seed``: a two-level
    (hierarchical) bootstrap.

    Args:
        statistic: ``rows -> float or 1-d array``; ``NaN`` marks a resample without an
            answer (e.g. a constant ``x``); such resamples are left out and counted.

    Returns:
        ``estimate`` (on all rows), ``lo``, ``hi`` (arrays when the statistic is one),
        ``n_clusters``, ``n_rows``, ``n_degenerate``.

    Raises:
        ValueError: fewer than 3 clusters (no interval over clusters is meaningful).
    """
    from scipy.stats import DegenerateDataWarning, bootstrap

    codes, _ = pd.factorize(frame[cluster], sort=True)
    k = int(codes.max()) + 1 if len(codes) else 0
    if k < 3:
        raise ValueError(f"an interval over {cluster!r} needs at least 3 clusters, got {k}")
    members = [np.flatnonzero(codes == c) for c in range(k)]
    if within is not None:
        sub = [pd.factorize(frame[within].to_numpy()[m], sort=True)[0] for m in members]
        units = [[m[s == u] for u in range(int(s.max()) + 1)] for m, s in zip(members, sub, strict=True)]
        # clusters whose units are single rows draw them in one step
        single = [np.concatenate(u) if all(len(r) == 1 for r in u) else None for u in units]
    inner = np.random.default_rng([seed, 1])

    def rows_of(ids: np.ndarray) -> np.ndarray:
        if within is None:
            return np.concatenate([members[int(c)] for c in ids])
        parts = []
        for c in ids:
            u = units[int(c)]
            draw = inner.integers(len(u), size=len(u))
            parts += [single[int(c)][draw]] if single[int(c)] is not None else [u[j] for j in draw]
        return np.concatenate(parts)

    def stat(ids: np.ndarray) -> np.ndarray:
        return np.atleast_1d(np.asarray(statistic(rows_of(ids)), dtype=float))

    estimate = np.atleast_1d(np.asarray(statistic(np.arange(len(frame))), dtype=float))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateDataWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        res = bootstrap((np.arange(k),), stat, vectorized=False, n_resamples=n_resamples,
                        confidence_level=confidence, method="percentile",
                        rng=np.random.default_rng(seed))
    dist = np.atleast_2d(res.bootstrap_distribution)
    alpha = 100 * (1 - confidence) / 2
    lo, hi = np.nanpercentile(dist, [alpha, 100 - alpha], axis=-1)
    scalar = estimate.size == 1
    return {"estimate": float(estimate[0]) if scalar else estimate,
            "lo": float(lo[0]) if scalar else lo, "hi": float(hi[0]) if scalar else hi,
            "n_clusters": k, "n_rows": len(frame), "n_degenerate": int(np.isnan(dist[0]).sum())}


def cluster_trend(frame: pd.DataFrame, x: str, y: str, cluster: str, *, within: str | None = None,
                  log_y: bool = False, seed: int = 0, n_resamples: int = N_RESAMPLES,
                  confidence: float = 0.95) -> dict[str, Any]:
    """:func:`trend` of column ``y`` against ``x`` with intervals over clusters.

    The fit and its four numbers are those of :func:`trend` on all rows; the intervals come
    from :func:`cluster_bootstrap` (clusters of column ``cluster``, then ``within`` units
    inside each, when given). Rows with a missing value (or ``y <= 0`` on the log axis) are
    dropped first. Adds ``n_clusters`` and, with ``within``, ``units_min``/``units_max``:
    the fewest and most units (seeds) a cluster has.
    """
    xs, ys = _clean(frame[x], frame[y], log_y)
    keep = np.isfinite(frame[x].to_numpy(float)) & np.isfinite(frame[y].to_numpy(float))
    if log_y:
        keep &= frame[y].to_numpy(float) > 0
    data = frame[keep].reset_index(drop=True)
    if len(data) < 3:
        raise ValueError(f"a trend needs at least 3 points, got {len(data)}")
    names = ("slope", "intercept", "r2", "spearman")

    def statistic(rows: np.ndarray) -> np.ndarray:
        u, v = xs[rows], ys[rows]
        if np.ptp(u) == 0 or np.ptp(v) == 0:
            return np.full(4, np.nan)
        return np.asarray(_fit(u, v))

    boot = cluster_bootstrap(data, statistic, cluster, within=within, seed=seed,
                             n_resamples=n_resamples, confidence=confidence)
    out: dict[str, Any] = {"n": len(data), "axis": "log10" if log_y else "linear",
                           "unit": cluster if within is None else f"{cluster}/{within}",
                           "n_clusters": boot["n_clusters"], "n_degenerate": boot["n_degenerate"]}
    for i, name in enumerate(names):
        out[name] = float(boot["estimate"][i])
        out[f"{name}_lo"], out[f"{name}_hi"] = float(boot["lo"][i]), float(boot["hi"][i])
    if within is not None:
        counts = data.groupby(cluster)[within].nunique()
        out["units_min"], out["units_max"] = int(counts.min()), int(counts.max())
    return out


def _design(frame: pd.DataFrame, columns: Sequence[str], y: str, log_y: bool) -> pd.DataFrame:
    data = frame[list(dict.fromkeys([*columns, y]))].astype(float)
    data = data[np.isfinite(data).all(axis=1)]
    if log_y:
        data = data[data[y] > 0].assign(**{y: lambda d: np.log10(d[y])})
    return data


def mixed_slope(frame: pd.DataFrame, x: str, y: str, group: str, *, log_y: bool = False,
                confidence: float = 0.95) -> dict[str, Any]:
    """Slope of ``y ~ x`` in a mixed model with a random intercept per ``group``.

    ``y_ij = a + b x_ij + u_j + e_ij`` with ``u_j ~ N(0, s_u^2)`` (``statsmodels``
    ``MixedLM``, REML); ``b`` with its Wald interval and p-value, the share of the
    residual variance between groups (``icc``), ``n``, ``n_groups``, and whether the
    optimiser converged.
    """
    import statsmodels.formula.api as smf
    from statsmodels.tools.sm_exceptions import ConvergenceWarning

    data = _design(frame, [x], y, log_y).rename(columns={x: "x", y: "y"})
    data["g"] = frame.loc[data.index, group].astype(str).to_numpy()
    if data["g"].nunique() < 3:
        raise ValueError(f"a random intercept per {group!r} needs at least 3 groups")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", UserWarning)
        fit = smf.mixedlm("y ~ x", data, groups=data["g"]).fit(reml=True)
    lo, hi = fit.conf_int(alpha=1 - confidence).loc["x"]
    between = float(fit.cov_re.iloc[0, 0])
    return {"slope": float(fit.params["x"]), "lo": float(lo), "hi": float(hi),
            "p": float(fit.pvalues["x"]), "icc": between / (between + float(fit.scale)),
            "n": len(data), "n_groups": int(data["g"].nunique()),
            "converged": bool(fit.converged) and not any(
                issubclass(w.category, ConvergenceWarning) for w in caught),
            "axis": "log10" if log_y else "linear"}


def adjusted_slope(frame: pd.DataFrame, x: str, y: str, controls: Sequence[str], cluster: str,
                   *, log_y: bool = False, confidence: float = 0.95) -> dict[str, Any]:
    """The coefficient of ``x`` in ``y ~ x + controls`` (OLS), with clustered errors.

    Returns ``coef`` with the interval and p-value from standard errors clustered by
    ``cluster`` (``lo``, ``hi``, ``p``) and from the naive i.i.d. ones (``naive_lo``,
    ``naive_hi``, ``naive_p``), the coefficient without the controls (``unadjusted``),
    ``n`` and ``n_clusters``.
    """
    import statsmodels.api as sm

    data = _design(frame, [x, *controls], y, log_y)
    groups = pd.factorize(frame.loc[data.index, cluster])[0]
    if len(set(groups)) < 3:
        raise ValueError(f"clustered errors need at least 3 values of {cluster!r}")
    design = sm.add_constant(data[[x, *controls]])
    naive = sm.OLS(data[y], design).fit()
    robust = sm.OLS(data[y], design).fit(cov_type="cluster", cov_kwds={"groups": groups})
    alpha = 1 - confidence
    lo, hi = robust.conf_int(alpha=alpha).loc[x]
    nlo, nhi = naive.conf_int(alpha=alpha).loc[x]
    plain = sm.OLS(data[y], sm.add_constant(data[[x]])).fit()
    return {"coef": float(robust.params[x]), "lo": float(lo), "hi": float(hi),
            "p": float(robust.pvalues[x]), "naive_lo": float(nlo), "naive_hi": float(nhi),
            "naive_p": float(naive.pvalues[x]), "unadjusted": float(plain.params[x]),
            "n": len(data), "n_clusters": len(set(groups)), "controls": list(controls),
            "axis": "log10" if log_y else "linear"}
