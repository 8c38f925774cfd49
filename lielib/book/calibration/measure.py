"""Every metric of the book on one model, and whether a metric ranks the controls as theory says.

* :func:`measure_model`: one row per (image, action) with one column per quantity, each
  oriented so that *lower means more invariant* (:data:`QUANTITIES`):

  - ``lee_<output>_<stencil>``: ``LEE(x) = mean_c |L p_c(x)|`` (:func:`lielib.lee`) on the
    softmax and on the logits, with the paper's one-sided stencil and the central one;
  - ``rho_<output>_<stencil>``: the sensitivity ratio (:func:`lielib.sensitivity_ratio`,
    from the same pass as the LEE beside it);
  - ``finite_difference``: :func:`lielib.metrics.sampled_invariance` on the softmax
    (rotations within 5 degrees, shifts within 2 pixels, as the model sets measure it);
  - ``eq_r_mse`` (rotate), ``eq_t_mse``, ``eq_t_frac_mse`` and ``shift_inconsistency``
    ``= 1 - consistency`` (translate): the sample-based metrics, whose usual readings
    (PSNR in dB, consistency) are monotone in these per image.

  Actions: ``rotate``, ``translate_x``, ``translate_y`` and ``translate`` (per image the
  mean of the two shifts; EQ-T and EQ-T-frac draw 2-D shifts, so they sit on that row).
* :func:`paired_contrasts`: per network, the paired (same images) difference of the mean
  between the controls that theory orders, with a 95% BCa bootstrap interval over images.
* :func:`verdicts`: per quantity and action, whether it ranks every network's controls
  in the expected order, and whether it reads the exactly invariant control as about 0.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from torch import nn

from lielib import metrics as M
from lielib import sensitivity_ratio

from ..rotated_mnist.measure import bootstrap_mean

__all__ = ["ACTIONS", "EXPECTED", "INVARIANT_FLOOR", "QUANTITIES", "measure_model",
           "paired_contrasts", "summarise", "verdicts"]

ACTIONS = ("rotate", "translate_x", "translate_y")
OUTPUTS = ("softmax", "logits")
STENCILS = ("paper", "central")
DIFFERENTIAL = tuple(f"{kind}_{o}_{s}" for kind in ("lee", "rho") for o in OUTPUTS for s in STENCILS)
SAMPLED = ("finite_difference", "eq_r_mse", "eq_t_mse", "eq_t_frac_mse", "shift_inconsistency")
QUANTITIES = DIFFERENTIAL + SAMPLED
"""Per-image columns of :func:`measure_model`; lower is more invariant for every one."""

EXPECTED = (("C4", "plain", "<"), ("C8", "C4", "<="), ("C16", "C8", "<="))
"""Rotation: ``(a, b, relation)`` of the controls of one network, on the mean over images.

``<``: the interval of ``mean a - mean b`` must lie below 0 (the bound of the module
docstring of :mod:`~lielib.book.calibration.controls` is strict for a network that is
not already invariant); ``<=``: it must not lie above 0.
"""

INVARIANT_FLOOR = 0.01
"""The exactly invariant control reads as invariant when the upper end of the interval of
``mean(pixel-mean) / mean(pixel-linear)`` is below this (both readouts have logits of unit
spread): one hundredth of the negative control. Fixed before any measurement."""


def _wide(tidy: pd.DataFrame, value: str, name: str) -> pd.DataFrame:
    return tidy.pivot(index="image", columns="action", values=value).rename_axis(columns=None) \
        .reset_index().melt(id_vars="image", var_name="action", value_name=name)


def measure_model(model: nn.Module, x: torch.Tensor, *, references: int = 8, seed: int = 0,
                  images_per_pass: int | None = None) -> pd.DataFrame:
    """Every quantity of :data:`QUANTITIES` per image and action (see the module docstring).

    Args:
        model: logits ``(B, 1, H, W) -> (B, K)``; measured in eval mode, restored after.
        x: ``(B, 1, H, W)`` images.
        references: phase-randomised references of the sensitivity ratio (same for all models).
        seed: references and sampled transforms; the same for every control, so that
            controls are compared on the same draws.

    Returns:
        Columns ``image, action`` and one per quantity; ``action`` also ``translate``.
    """
    keys = ["image", "action"]
    frame = None
    for output in OUTPUTS:
        for stencil in STENCILS:
            tidy = sensitivity_ratio(model, x, list(ACTIONS), references=references, seed=seed,
                                     output=output, stencil=stencil, images_per_pass=images_per_pass)
            part = _wide(tidy, "lee", f"lee_{output}_{stencil}").merge(
                _wide(tidy, "rho", f"rho_{output}_{stencil}"), on=keys)
            frame = part if frame is None else frame.merge(part, on=keys)
    h, w = x.shape[-2:]
    t_max = {"rotate": math.radians(5), "translate_x": 2.0 / w, "translate_y": 2.0 / h}
    fd = pd.concat([M.sampled_invariance(model, x, a, t_max=t_max[a], seed=seed) for a in ACTIONS])
    frame = frame.merge(fd[["image", "action", "finite_difference_lee"]]
                        .rename(columns={"finite_difference_lee": "finite_difference"}), on=keys)
    eq_r = M.eq_r(model, x, seed=seed)
    shift = M.shift_consistency(model, x, max_shift=max(1, round(h / 8)))
    per_image = {
        "rotate": {"eq_r_mse": eq_r["eq_r_mse"]},
        "translate_x": {"shift_inconsistency": 1 - shift["consistency_x"]},
        "translate_y": {"shift_inconsistency": 1 - shift["consistency_y"]},
    }
    extra = pd.concat([pd.DataFrame({"image": range(len(x)), "action": a, **cols})
                       for a, cols in per_image.items()], ignore_index=True)
    frame = frame.merge(extra, on=keys, how="left")
    translate = frame[frame["action"] != "rotate"].groupby("image")[list(QUANTITIES[:-4])
                                                                   + ["shift_inconsistency"]].mean()
    translate = translate.assign(
        action="translate",
        eq_t_mse=M.eq_t(model, x, seed=seed)["eq_t_mse"].to_numpy(),
        eq_t_frac_mse=M.eq_t_frac(model, x, seed=seed)["eq_t_frac_mse"].to_numpy()).reset_index()
    frame = pd.concat([frame, translate], ignore_index=True)
    return frame[["image", "action", *QUANTITIES]].sort_values(keys, key=_action_order,
                                                               ignore_index=True)


def _action_order(col: pd.Series) -> pd.Series:
    order = {a: i for i, a in enumerate((*ACTIONS, "translate"))}
    return col.map(order) if col.name == "action" else col


def summarise(per_image: pd.DataFrame, *, n_resamples: int = 2_000, seed: int = 0) -> pd.DataFrame:
    """Mean over images of every quantity per (network, control, action), with a 95% BCa interval.

    Returns:
        Columns ``network, control, action, quantity, n, mean, low, high``.
    """
    rows = []
    for (network, control, action), part in per_image.groupby(["network", "control", "action"],
                                                              sort=False):
        for q in QUANTITIES:
            values = part[q].dropna().to_numpy(dtype=float)
            if not len(values):
                continue
            mean, low, high = bootstrap_mean(values, n_resamples=n_resamples, seed=seed)
            rows.append({"network": network, "control": control, "action": action, "quantity": q,
                         "n": len(values), "mean": mean, "low": low, "high": high})
    return pd.DataFrame(rows)


def _verdict(low: float, high: float, relation: str) -> str:
    if high < 0:
        return "as expected"
    if low > 0:
        return "reversed"
    return "unresolved" if relation == "<" else "as expected (tie)"


def paired_contrasts(per_image: pd.DataFrame, *, action: str = "rotate", n_resamples: int = 2_000,
                     seed: int = 0) -> pd.DataFrame:
    """Per network and quantity, ``mean a - mean b`` on the same images for every pair of :data:`EXPECTED`.

    The pairs of :data:`EXPECTED` only for ``action="rotate"``; for every action the readouts.

    Also ``pixel-mean / pixel-linear``: the ratio of the means of the two readouts (paired
    bootstrap over images), against :data:`INVARIANT_FLOOR`.

    Returns:
        Columns ``network, action, quantity, a, b, relation, n, difference, low, high,
        verdict`` (``difference`` is the ratio for the readouts, relation ``~0``).
    """
    from scipy import stats

    part = per_image[per_image["action"] == action]
    rows = []
    for network, net in part.groupby("network", sort=False):
        controls = set(net["control"])
        for q in QUANTITIES:
            wide = net.pivot(index="image", columns="control", values=q)
            if network == "readouts":
                pairs = [("pixel-mean", "pixel-linear", "~0")]
            elif action == "rotate":  # theory orders the rotation averages along rotations only
                pairs = [p for p in EXPECTED if {p[0], p[1]} <= controls]
            else:
                pairs = []
            for a, b, relation in pairs:
                both = wide[[a, b]].dropna()
                if both.empty:
                    continue
                if relation == "~0":
                    va, vb = both[a].to_numpy(float), both[b].to_numpy(float)
                    ratio = float(va.mean() / vb.mean()) if vb.mean() > 0 else math.nan
                    if len(both) > 1 and np.isfinite(ratio) and np.ptp(va) > 0:
                        res = stats.bootstrap((va, vb), lambda u, v, axis=-1: u.mean(axis) / v.mean(axis),
                                              paired=True, n_resamples=n_resamples, method="BCa",
                                              rng=np.random.default_rng(seed))
                        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
                    else:
                        low = high = ratio
                    verdict = ("as expected" if high < INVARIANT_FLOOR else "not invariant"
                               if np.isfinite(high) else "undefined")
                    rows.append({"network": network, "action": action, "quantity": q, "a": a, "b": b,
                                 "relation": relation, "n": len(both), "difference": ratio,
                                 "low": low, "high": high, "verdict": verdict})
                    continue
                diff = (both[a] - both[b]).to_numpy(float)
                mean, low, high = bootstrap_mean(diff, n_resamples=n_resamples, seed=seed)
                rows.append({"network": network, "action": action, "quantity": q, "a": a, "b": b,
                             "relation": relation, "n": len(diff), "difference": mean, "low": low,
                             "high": high, "verdict": _verdict(low, high, relation)})
    return pd.DataFrame(rows)


def verdicts(contrasts: pd.DataFrame) -> pd.DataFrame:
    """Per action and quantity: does it rank every network's controls as expected, and the invariant one at ~0?

    ``ranks_controls``: every strict pair of every network resolved in the expected
    direction and no pair reversed (empty where no pair is ordered, e.g. translations);
    ``invariant_at_zero``: the pixel-mean readout below :data:`INVARIANT_FLOOR` of the
    negative control. ``calibrated``: both (the second alone where nothing is ordered).

    Returns:
        Columns ``action, quantity, metric, output, stencil, networks, pairs, as_expected,
        unresolved, reversed, ranks_controls, invariant_ratio, invariant_ratio_high,
        invariant_at_zero, calibrated``.
    """
    rows = []
    for (action, q), part in contrasts.groupby(["action", "quantity"], sort=False):
        order = part[part["relation"] != "~0"]
        zero = part[part["relation"] == "~0"]
        kind, _, rest = q.partition("_")
        output, stencil = rest.split("_") if q in DIFFERENTIAL else ("softmax", "")
        reversed_ = int((order["verdict"] == "reversed").sum())
        unresolved = int((order["verdict"] == "unresolved").sum())
        ranks = (reversed_ == 0 and unresolved == 0) if len(order) else None
        at_zero = bool(len(zero)) and bool((zero["verdict"] == "as expected").all())
        rows.append({"action": action, "quantity": q, "metric": kind if q in DIFFERENTIAL else q, "output": output,
                     "stencil": stencil, "networks": int(order["network"].nunique()),
                     "pairs": len(order), "as_expected": int(order["verdict"].str.startswith("as expected").sum()),
                     "unresolved": unresolved, "reversed": reversed_, "ranks_controls": ranks,
                     "invariant_ratio": float(zero["difference"].iloc[0]) if len(zero) else math.nan,
                     "invariant_ratio_high": float(zero["high"].iloc[0]) if len(zero) else math.nan,
                     "invariant_at_zero": at_zero, "calibrated": at_zero and ranks is not False})
    return pd.DataFrame(rows)
