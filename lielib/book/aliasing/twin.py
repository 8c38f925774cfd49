"""The anti-aliased twin: trained with the zoo's recipe, compared with the plain model.

The twin (:mod:`lielib.book.blurpool`, every strided path blurred) is trained by
:func:`lielib.book.zoo_train.train_entry` with the plain zoo model's recipe, data and seed.
The comparison measures both on the same test images: per image and transformation the
raw LEE and the scale-free sensitivity ratio (:func:`lielib.sensitivity_ratio`, one pass
for both), and per transformation the paired bootstrap ratio plain / twin of their means
(:func:`lielib.book.stats.ratio_ci`).
"""

from __future__ import annotations

import pandas as pd
import torch

from .. import blurpool
from ..paths import ROOT, cache_dir
from ..results import metadata, write_json

__all__ = ["compare_twin", "train_twin", "twin_ratios"]


def train_twin(zoo_name: str = "resnet-large", *, seed: int = 0, steps: int | None = None,
               progress: bool = True, out=None):
    """Train the fully blurred twin of ``zoo_name`` with the zoo's recipe; returns the JSON path.

    Checkpoints go to :func:`lielib.book.blurpool.twin_checkpoint`; the record, loss curve
    and snapshots to ``results/aliasing/twin-<name>-seed<k>.json`` with metadata.
    """
    from .. import zoo
    from ..zoo_train import fashion_mnist, train_entry

    entry = blurpool.twin_entry(zoo_name)
    steps = zoo.STEPS if steps is None else steps
    res = train_entry(entry, fashion_mnist("train"), fashion_mnist("test"), seed=seed,
                      steps=steps, cache=cache_dir("aliasing", f"seed{seed}"), progress=progress)
    out = ROOT / "results" / "aliasing" if out is None else out
    cmd = f"python -m lielib.book.aliasing --train-twin --twin-seed {seed}"
    return write_json(out / f"twin-{entry.name}-seed{seed}.json",
                      {**res, "metadata": metadata(command=cmd, seed=seed, plain=zoo_name)})


def compare_twin(plain: torch.nn.Module, twin: torch.nn.Module, x: torch.Tensor, actions,
                 *, references: int = 8, seed: int = 0) -> pd.DataFrame:
    """Per image and action: ``lee`` and ``rho`` of each model, one row per variant."""
    from lielib import sensitivity_ratio

    frames = []
    for variant, model in (("plain", plain), ("blurall", twin)):
        f = sensitivity_ratio(model, x, list(actions), references=references, seed=seed)
        frames.append(f.assign(variant=variant))
    return pd.concat(frames, ignore_index=True)


def twin_ratios(per_image: pd.DataFrame, *, seed: int = 0) -> pd.DataFrame:
    """Per action (and twin seed): plain / twin ratio of mean ``lee`` and of mean ``rho``.

    A paired bootstrap over images (:func:`lielib.book.stats.ratio_ci`); above 1 means the
    blurred twin is the more equivariant.
    """
    from ..stats import ratio_ci

    rows = []
    keys = [k for k in ("twin_seed", "action") if k in per_image.columns]
    for key, g in per_image.groupby(keys):
        wide = g.pivot(index="image", columns="variant", values=["lee", "rho"]).dropna()
        row = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
        for metric in ("lee", "rho"):
            r = ratio_ci(wide[metric]["plain"], wide[metric]["blurall"], seed=seed)
            row.update({f"{metric}_ratio": r["ratio"], f"{metric}_lo": r["lo"],
                        f"{metric}_hi": r["hi"]})
        row["n"] = len(wide)
        rows.append(row)
    return pd.DataFrame(rows)
