"""Per-image equivariance measurements and their bootstrap summaries.

* :data:`METRICS`: name -> function ``(model, x) -> frame`` with one row per image and one
  column per action. ``lee``: ``LEE_G(x) = mean_c |L_G softmax(f(x))_c|`` from
  :func:`lielib.lee`; ``rho``: the scale-free sensitivity ratio
  ``rho_G(x) = (|J tau_G| / |tau_G|) / sqrt(mean_r |J v_r|^2 / |v_r|^2)`` from
  :func:`lielib.sensitivity_ratio` (8 phase-randomised references, the same for every
  checkpoint). A further metric is one more entry: the run measures every stored
  checkpoint for every metric it lacks, without retraining.
* :func:`summarise`: mean per (variant, epoch, action) with a 95% bootstrap interval over
  images (``scipy.stats.bootstrap``, BCa).
* :func:`ratios` / :func:`contrasts`: the per-image log ratio
  ``r(x) = log(LEE_rotate(x) / LEE_translate(x))`` (``translate`` the mean of the x and y
  shifts), its mean with an interval, and paired differences of it between epochs and
  between variants on the same images.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
from scipy import stats
from torch import nn

from lielib import lee, sensitivity_ratio

__all__ = ["ACTIONS", "METRICS", "bootstrap_mean", "contrasts", "measure_lee", "measure_rho",
           "ratios", "summarise", "with_translate"]

ACTIONS = ("rotate", "translate_x", "translate_y")


def measure_lee(model: nn.Module, x: torch.Tensor) -> pd.DataFrame:
    """``LEE_G(x) = mean_c |L_G softmax(f(x))_c|`` per image for :data:`ACTIONS` (one column each)."""
    return lee(model, x, list(ACTIONS), stencil="paper")


def measure_rho(model: nn.Module, x: torch.Tensor, *, references: int = 8, seed: int = 0) -> pd.DataFrame:
    """``rho_G(x) = (|J tau_G| / |tau_G|) / sqrt(mean_r |J v_r|^2 / |v_r|^2)`` per image for :data:`ACTIONS`.

    The references are drawn from ``seed`` alone, so every checkpoint is measured against
    the same directions on the same digits (paired comparisons across epochs and variants).
    """
    tidy = sensitivity_ratio(model, x, list(ACTIONS), num_references=references, seed=seed,
                             stencil="paper")
    wide = tidy.pivot(index="image", columns="action", values="rho")[list(ACTIONS)]
    wide.columns.name = None
    return wide


METRICS: dict[str, Callable[[nn.Module, torch.Tensor], pd.DataFrame]] = {
    "lee": measure_lee, "rho": measure_rho}
"""Per-image metrics measured on every checkpoint; each becomes a column of the tables."""


def with_translate(per_image: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Add ``action == "translate"``, the per-image mean of ``translate_x`` and ``translate_y``.

    Other metrics' columns are dropped first: they differ between the two shifts, so
    grouping on them would keep both shifts apart instead of averaging them.
    """
    per_image = per_image[[c for c in per_image.columns if c not in METRICS or c == metric]]
    keys = [c for c in per_image.columns if c not in ("action", metric)]
    tr = per_image[per_image["action"].isin(["translate_x", "translate_y"])]
    mean = tr.groupby(keys, sort=False)[metric].mean().reset_index().assign(action="translate")
    return pd.concat([per_image, mean[per_image.columns]], ignore_index=True)


def bootstrap_mean(values: np.ndarray, *, n_resamples: int, seed: int) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean of ``values`` and its 95% BCa bootstrap interval."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2 or np.ptp(values) == 0:
        m = float(values.mean()) if len(values) else float("nan")
        return m, m, m
    res = stats.bootstrap((values,), np.mean, n_resamples=n_resamples, confidence_level=0.95,
                          method="BCa", rng=np.random.default_rng(seed))
    ci = res.confidence_interval
    return float(values.mean()), float(ci.low), float(ci.high)


def summarise(per_image: pd.DataFrame, metric: str = "lee", *, n_resamples: int = 2_000,
              seed: int = 0) -> pd.DataFrame:
    """One row per (variant, epoch, action): ``n``, ``<metric>`` (mean) and its 95% interval.

    Args:
        per_image: columns ``variant, epoch, image, action, <metric>``.

    Returns:
        Columns ``variant, epoch, action, n, <metric>, <metric>_low, <metric>_high``.
    """
    rows = []
    full = with_translate(per_image, metric)
    for (variant, epoch, action), part in full.groupby(["variant", "epoch", "action"], sort=False):
        mean, low, high = bootstrap_mean(part[metric].to_numpy(), n_resamples=n_resamples, seed=seed)
        rows.append({"variant": variant, "epoch": epoch, "action": action, "n": len(part),
                     metric: mean, f"{metric}_low": low, f"{metric}_high": high})
    return pd.DataFrame(rows)


def _log_ratio(per_image: pd.DataFrame, metric: str) -> pd.DataFrame:
    """``variant, epoch, image, log_ratio = log(rotate / translate)`` per image."""
    wide = with_translate(per_image, metric).pivot_table(
        index=["variant", "epoch", "image"], columns="action", values=metric)
    return np.log(wide["rotate"] / wide["translate"]).rename("log_ratio").reset_index()


def ratios(per_image: pd.DataFrame, metric: str = "lee", *, n_resamples: int = 2_000,
           seed: int = 0) -> pd.DataFrame:
    """Mean per-image ``log(LEE_rotate / LEE_translate)`` per (variant, epoch), with its interval.

    ``exp`` of it is the geometric-mean ratio; a fall over training means rotation LEE fell
    relative to translation LEE on the same digits.
    """
    rows = []
    for (variant, epoch), part in _log_ratio(per_image, metric).groupby(["variant", "epoch"], sort=False):
        mean, low, high = bootstrap_mean(part["log_ratio"].to_numpy(), n_resamples=n_resamples, seed=seed)
        rows.append({"variant": variant, "epoch": epoch, "metric": metric, "n": len(part),
                     "log_ratio": mean, "log_ratio_low": low, "log_ratio_high": high})
    return pd.DataFrame(rows)


def contrasts(per_image: pd.DataFrame, metric: str = "lee", *, n_resamples: int = 2_000,
              seed: int = 0) -> pd.DataFrame:
    """Paired (same digits) differences of the per-image log ratio, with 95% intervals.

    * ``training``: last epoch minus epoch 1, and last minus epoch 0, per variant;
    * ``pretraining``: ``mae`` minus ``scratch`` at the last epoch (each with and without ``+rot``);
    * ``augmentation``: ``<base>+rot`` minus ``<base>`` at the last epoch;
    * ``upright``: ``<base>+up`` minus ``<base>`` at the last epoch (the upright control,
      when both are in the table).

    Returns:
        Columns ``question, a, b, n, difference, low, high`` (``a - b``; ``a`` and ``b``
        as ``variant@epoch``).
    """
    lr = _log_ratio(per_image, metric).set_index(["variant", "epoch", "image"])["log_ratio"]
    last = {v: int(e.max()) for v, e in per_image.groupby("variant")["epoch"]}
    pairs = []
    for v, e in last.items():
        pairs += [("training", (v, e), (v, first)) for first in (1, 0) if first < e]
    for suffix in ("", "+rot"):
        if "mae" + suffix in last and "scratch" + suffix in last:
            pairs.append(("pretraining", ("mae" + suffix, last["mae" + suffix]),
                          ("scratch" + suffix, last["scratch" + suffix])))
    for v, e in last.items():
        if v.endswith("+rot") and v[:-4] in last:
            pairs.append(("augmentation", (v, e), (v[:-4], last[v[:-4]])))
    for v, e in last.items():
        if v.endswith("+up") and v[:-3] in last:
            pairs.append(("upright", (v, e), (v[:-3], last[v[:-3]])))
    rows = []
    for question, a, b in pairs:
        diff = (lr.loc[a] - lr.loc[b]).dropna().to_numpy()
        mean, low, high = bootstrap_mean(diff, n_resamples=n_resamples, seed=seed)
        rows.append({"question": question, "metric": metric, "a": f"{a[0]}@{a[1]}",
                     "b": f"{b[0]}@{b[1]}", "n": len(diff), "difference": mean, "low": low,
                     "high": high})
    return pd.DataFrame(rows)
