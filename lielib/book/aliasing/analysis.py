"""What the chapter and its Claims-page rows read from ``results/aliasing``: one place.

- :func:`read_budgets`: the per-model ``modules`` and ``images`` tables, concatenated;
- :func:`cancellation`: per model, action and stencil, how far the squared norms overshoot
  ``||L f||^2`` (``squared_ratio``: median, range, and the ratio of means with a bootstrap
  interval over images);
- :func:`lielib.book.aliasing.layerwise.group_shares`: squared and signed shares of groups
  of modules with intervals;
- :func:`read_twin`: the twin comparison (per-image values, ratios, models).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..results import read_table
from .layerwise import group_shares

__all__ = ["HOW", "cancellation", "group_shares", "read_budgets", "read_twin"]

HOW = "python -m lielib.book.aliasing"


def read_budgets(results: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, list[Path]]:
    """``(modules, images, paths)`` of every model under ``results/layerwise``.

    Raises:
        MissingResultsError: no model has been measured yet.
    """
    from ..results import MissingResultsError

    folder = Path(results) / "layerwise"
    paths = sorted(folder.glob("*-images.csv"))
    if not paths:
        raise MissingResultsError(f"the results are not there yet: no layer-wise budgets in "
                                  f"{folder}; run `{HOW} --only layerwise`")
    mods, imgs, read = [], [], []
    for p in paths:
        m = p.with_name(p.name.replace("-images.csv", "-modules.csv"))
        imgs.append(read_table(p, how=HOW)[0])
        mods.append(read_table(m, how=HOW)[0])
        read += [m, p]
    return pd.concat(mods, ignore_index=True), pd.concat(imgs, ignore_index=True), read


def cancellation(images: pd.DataFrame, *, seed: int = 0) -> pd.DataFrame:
    """Per model, action and stencil: ``sum_m ||c_m||^2 / ||L f||^2`` over images.

    Columns ``median``, ``min``, ``max`` (per image), ``pooled`` (``sum_i sum_m ||c_m||^2 /
    sum_i ||L f||^2``) with ``pooled_lo``/``pooled_hi`` (paired bootstrap), ``n``.
    """
    from ..stats import ratio_ci

    rows = []
    al = images[images.group == "all"]
    for (model, action, stencil), g in al.groupby(["model", "action", "stencil"]):
        r = ratio_ci(g.value.to_numpy(), g.total.to_numpy(), seed=seed)
        rows.append({"model": model, "action": action, "stencil": stencil,
                     "median": g.squared_ratio.median(), "min": g.squared_ratio.min(),
                     "max": g.squared_ratio.max(), "pooled": r["ratio"], "pooled_lo": r["lo"],
                     "pooled_hi": r["hi"], "n": r["n"]})
    return pd.DataFrame(rows)


def read_twin(results: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, list[Path]]:
    """``(per-image, ratios, models, paths)`` of the twin comparison.

    Raises:
        MissingResultsError: the comparison has not been run (the twin is not trained yet).
    """
    from ..zoo import STEPS

    paths = [Path(results) / f"twin-{n}.csv" for n in ("images", "ratios", "models")]
    per, ratios, models = [read_table(p, how=f"{HOW} --only twin")[0] for p in paths]
    # Tables written before twins had a step budget of their own hold the zoo's only.
    for frame, column in ((per, "twin_steps"), (ratios, "twin_steps"), (models, "steps")):
        if column not in frame.columns:
            frame[column] = STEPS
    return per, ratios, models, paths
