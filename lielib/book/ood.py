"""Real ImageNet models off and on their distribution, and across sizes: EfficientNet-Lite0/1/2.

Two claims of the paper need real ImageNet models, and this machine has three:

* *out-of-distribution gap*: LEE is higher on images unlike the training data. Each model
  is measured on the offline photo set (in distribution) and on MNIST digits and
  Fashion-MNIST garments (out of distribution), every image prepared with the model's own
  timm data config (resize, centre crop, normalisation; greyscale repeated to RGB);
* *size trend*: within a family, larger and more accurate models are more equivariant.
  The three models are measured on the same photos, each at its native resolution.

The per-image table is long: one row per model, image, metric and action (raw LEE, and its
scale-free companion, the sensitivity ratio ``rho`` with its standard error ``se``), so
that another metric adds rows, not columns::

    model, arch, params, top1, resolution, set, distribution, image, confidence,
    metric, action, value, se

``confidence`` is the top-1 softmax probability, the confound of softmax LEE.
:func:`ood_gap` and :func:`size_table` summarise it with bootstrap 95% intervals.

CLI: ``python -m lielib.book.ood [--n 30] [--out results/real_models]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

__all__ = [
    "ACTIONS",
    "IN_DISTRIBUTION",
    "METRICS",
    "OUT_OF_DISTRIBUTION",
    "TIMM_TOP1",
    "load_set",
    "main",
    "measure_model",
    "ood_gap",
    "ratio_unpaired",
    "run",
    "size_table",
    "with_translate",
]

IN_DISTRIBUTION = "photos"
OUT_OF_DISTRIBUTION = ("mnist", "fashion-mnist")
ACTIONS = ("translate_x", "translate_y", "rotate", "scale", "saturate")
TIMM_TOP1 = {
    "tf_efficientnet_lite0.in1k": 74.842,
    "tf_efficientnet_lite1.in1k": 76.638,
    "tf_efficientnet_lite2.in1k": 77.460,
}
"""ImageNet-1k top-1 (%) of timm's ported EfficientNet-Lite weights with timm's preprocessing
at native resolution, as published in timm's results table (README, "Ported Weights")."""


METRICS = ("lee", "sensitivity_ratio")
"""The metrics of the table: raw LEE and its scale-free companion (:func:`lielib.sensitivity_ratio`,
``rho``), both from one pass."""


def load_set(name: str, n: int, data_config: Any, *, seed: int = 0,
             root: str | None = None) -> tuple[torch.Tensor, list[str]]:
    """``n`` seeded images of set ``name``, preprocessed with ``data_config``.

    Args:
        name: ``"photos"`` or an idx dataset (``"mnist"``, ``"fashion-mnist"``, test split).
        n: how many images (the same seeded choice for every model).
        data_config: the model's timm data config (a ``ModelInfo`` or a mapping).
        seed: chooses the images.
        root: data root (see :func:`lielib.book.data.data_root`).

    Returns:
        Images ``(n, 3, H, W)`` and their ids (file names, or ``<set>:test:<index>``).
    """
    from PIL import Image

    from .data import load_idx, load_photos, make_transform, seeded_indices

    if name == IN_DISTRIBUTION:
        batch = load_photos(n, data_config=data_config, seed=seed, root=root)
        return batch.images, list(batch.files)
    images, _ = load_idx(name, "test", root=root)
    idx = seeded_indices(len(images), n, seed)
    transform = make_transform(data_config)
    x = torch.stack([transform(Image.fromarray(images[i].numpy(), mode="L").convert("RGB"))
                     for i in idx])
    return x, [f"{name}:test:{i}" for i in idx]


def measure_model(name: str, *, n: int = 30, sets: Sequence[str] = (IN_DISTRIBUTION,
                  *OUT_OF_DISTRIBUTION), actions: Sequence[str] = ACTIONS, seed: int = 0,
                  root: str | None = None) -> tuple[pd.DataFrame, dict]:
    """Both metrics of :data:`METRICS` per image, action and set, for one Lite model.

    ``LEE_G(x) = mean_c |L_G p_c(x)|`` (softmax output, the paper's stencil) and the
    sensitivity ratio ``rho_G(x)`` with its standard error ``se`` (8 phase-randomised
    references per image, drawn from ``seed``).

    Returns:
        The long per-image frame (see the module docstring) and the model's ``ModelInfo``
        as a dict.
    """
    from .. import sensitivity_ratio
    from .models import load_model

    model, info = load_model(name, pretrained=True)
    parts = []
    for set_name in sets:
        x, ids = load_set(set_name, n, info, seed=seed, root=root)
        with torch.no_grad():
            confidence = model(x).softmax(-1).max(-1).values.double().numpy()
        values = sensitivity_ratio(model, x, list(actions), seed=seed, stencil="paper")
        values["image"] = [ids[i] for i in values["image"]]
        values["confidence"] = confidence[[ids.index(i) for i in values["image"]]]
        for metric, column, se in (("lee", "lee", None), ("sensitivity_ratio", "rho", "rho_se")):
            part = values[["image", "confidence", "action", column]].rename(columns={column: "value"})
            part["se"] = values[se] if se else np.nan
            parts.append(part.assign(set=set_name, metric=metric))
    frame = pd.concat(parts, ignore_index=True)
    frame["distribution"] = np.where(frame["set"] == IN_DISTRIBUTION, "in", "out")
    head = {"model": name, "arch": info.arch, "params": info.num_params,
            "top1": TIMM_TOP1.get(name, float("nan")), "resolution": info.data_config["input_size"][-1]}
    for k, v in reversed(head.items()):
        frame.insert(0, k, v)
    cols = ["model", "arch", "params", "top1", "resolution", "set", "distribution", "image",
            "confidence", "metric", "action", "value", "se"]
    return frame[cols], info.to_dict()


def ratio_unpaired(a: Any, b: Any, *, seed: int = 0, n_resamples: int = 2000) -> dict[str, float]:
    """``mean(a) / mean(b)`` for two independent samples, with a bootstrap 95% interval.

    Each sample is resampled on its own (``scipy.stats.bootstrap``, percentile interval).
    """
    from scipy.stats import bootstrap

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    res = bootstrap((a, b), lambda u, v, axis=-1: u.mean(axis) / v.mean(axis), paired=False,
                    n_resamples=n_resamples, method="percentile", rng=np.random.default_rng(seed))
    ci = res.confidence_interval
    return {"ratio": float(a.mean() / b.mean()), "lo": float(ci.low), "hi": float(ci.high),
            "n_a": len(a), "n_b": len(b)}


def with_translate(frame: pd.DataFrame) -> pd.DataFrame:
    """Add ``action == "translate"``: the mean of the x and y values of each image (no ``se``)."""
    tr = frame[frame.action.isin(["translate_x", "translate_y"])]
    keys = [c for c in frame.columns if c not in ("action", "value", "se")]
    mean = tr.groupby(keys, as_index=False, dropna=False)["value"].mean().assign(
        action="translate", se=np.nan)
    return pd.concat([frame, mean[frame.columns]], ignore_index=True)


def ood_gap(frame: pd.DataFrame, *, metric: str = "lee", seed: int = 0) -> pd.DataFrame:
    """Per model, OOD set and action: mean in and out of distribution and their ratio.

    ``ratio = mean_OOD / mean_photos`` with an unpaired bootstrap interval (different
    images), plus the mean top-1 confidence of each set. ``ratio > 1``: less equivariant
    out of distribution, as the paper says.
    """
    from .stats import mean_ci

    frame = with_translate(frame[frame.metric == metric])
    rows = []
    for (model, action), part in frame.groupby(["model", "action"], sort=False):
        ind = part[part.set == IN_DISTRIBUTION]
        for set_name, out in part[part.distribution == "out"].groupby("set", sort=False):
            r = ratio_unpaired(out.value, ind.value, seed=seed)
            m_in, m_out = mean_ci(ind.value, seed=seed), mean_ci(out.value, seed=seed)
            rows.append({"model": model, "action": action, "set": set_name, "metric": metric,
                         "mean_in": m_in["mean"], "mean_in_lo": m_in["lo"], "mean_in_hi": m_in["hi"],
                         "mean_out": m_out["mean"], "mean_out_lo": m_out["lo"],
                         "mean_out_hi": m_out["hi"], "ratio": r["ratio"], "ratio_lo": r["lo"],
                         "ratio_hi": r["hi"], "n_in": r["n_b"], "n_out": r["n_a"],
                         "confidence_in": float(ind.confidence.mean()),
                         "confidence_out": float(out.confidence.mean())})
    return pd.DataFrame(rows)


def size_table(frame: pd.DataFrame, *, metric: str = "lee", seed: int = 0) -> pd.DataFrame:
    """Per model and action on the photos: params, top-1, mean with interval, ratio to the smallest.

    ``ratio = mean_model / mean_smallest`` over the same photos (paired bootstrap), and
    Spearman's rho of the three means against parameters (``spearman_params``) for
    reference: with three models it takes only the values -1, -0.5, 0.5 and 1.
    """
    from scipy.stats import spearmanr

    from .stats import mean_ci, ratio_ci

    frame = with_translate(frame[(frame.metric == metric) & (frame.set == IN_DISTRIBUTION)])
    rows = []
    for action, part in frame.groupby("action", sort=False):
        wide = part.pivot_table(index="image", columns="model", values="value")
        info = part.drop_duplicates("model").set_index("model").sort_values("params")
        smallest = info.index[0]
        for model, row in info.iterrows():
            m = mean_ci(wide[model], seed=seed)
            r = ratio_ci(wide[model].to_numpy(), wide[smallest].to_numpy(), seed=seed) \
                if model != smallest else {"ratio": 1.0, "lo": 1.0, "hi": 1.0}
            rows.append({"model": model, "action": action, "metric": metric,
                         "params": int(row.params), "top1": float(row.top1),
                         "resolution": int(row.resolution), "n": m["n"], "mean": m["mean"],
                         "lo": m["lo"], "hi": m["hi"], "ratio_to_smallest": r["ratio"],
                         "ratio_lo": r["lo"], "ratio_hi": r["hi"],
                         "confidence": float(part[part.model == model].confidence.mean())})
    out = pd.DataFrame(rows)
    rho = out.groupby("action").apply(
        lambda g: spearmanr(g.params, g["mean"]).statistic, include_groups=False)
    return out.assign(spearman_params=out.action.map(rho))


def run(out: str | Path, *, models: Sequence[str] | None = None, n: int = 30, seed: int = 0,
        root: str | None = None) -> Path:
    """Measure the Lite models on photos, MNIST and Fashion-MNIST; write ``<out>/lee.csv``."""
    from .modelsets import LITE_MODELS
    from .results import metadata, write_table

    models = list(models or LITE_MODELS)
    frames, infos, seconds = [], [], {}
    for name in models:
        start = time.perf_counter()
        frame, info = measure_model(name, n=n, seed=seed, root=root)
        seconds[name] = round(time.perf_counter() - start, 1)
        print(f"{name}: {len(frame)} rows in {seconds[name]:.0f} s", file=sys.stderr, flush=True)
        frames.append(frame)
        infos.append(info)
    table = pd.concat(frames, ignore_index=True)
    path = Path(out) / "lee.csv"
    write_table(path, table, metadata(
        seed=seed, device="cpu", models=[f"{i['full_name']} ({i['source']})" for i in infos],
        model_info=infos, n_images=n, sets=[IN_DISTRIBUTION, *OUT_OF_DISTRIBUTION],
        actions=list(ACTIONS), metrics=list(METRICS), references=8, output="softmax", reduce="mean_abs",
        stencil="paper", top1_source="timm README, Ported Weights table (timm preprocessing)",
        seconds=seconds, threads=torch.get_num_threads()))
    return path


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m lielib.book.ood``: measure and write ``results/real_models/lee.csv``."""
    from .paths import ROOT

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "results" / "real_models"))
    parser.add_argument("--n", type=int, default=30, help="images per set (default 30)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", nargs="*", default=None)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(run(args.out, models=args.models, n=args.n, seed=args.seed))


if __name__ == "__main__":
    main()
